//! Finds and opens plugin libraries. A kind `button` lives in
//! `<plugin-dir>/libsited_plugin_button.so`. Libraries are opened once with `RTLD_NOW |
//! RTLD_NODELETE` and never unloaded; a reload re-creates instances, not libraries. Loading a
//! plugin runs its code, so the file and its directory must belong to root or to sited's own
//! user and must not be writable by anyone else.

use super::Error;
use site_plugin_api::Role;
use site_plugin_api::abi::{self, PluginDescriptor, QueryFn};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened plugin library and the descriptor it chose.
pub struct PluginLibrary {
    pub kind: String,
    pub path: PathBuf,
    pub version: String,
    pub role: Role,
    pub abi_version: u32,
    pub(super) descriptor: &'static PluginDescriptor,
    /// Kept so the handle is never closed (RTLD_NODELETE also pins the mapping).
    _library: libloading::os::unix::Library,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

/// The file a kind's plugin lives in.
pub fn file_name(kind: &str) -> String {
    format!("libsited_plugin_{kind}.so")
}

/// Every library opened so far, by path. Never shrinks.
#[derive(Debug, Default)]
pub struct Libraries {
    loaded: HashMap<PathBuf, Arc<PluginLibrary>>,
}

impl Libraries {
    pub fn new() -> Self {
        Libraries::default()
    }

    /// The plugin for `kind` from `dir`, opening it the first time.
    pub fn load(&mut self, dir: &Path, kind: &str) -> Result<Arc<PluginLibrary>, Error> {
        let path = dir.join(file_name(kind));
        if let Some(lib) = self.loaded.get(&path) {
            return Ok(lib.clone());
        }
        if !path.exists() {
            return Err(Error::NotFound {
                kind: kind.to_string(),
                path,
                available: available_kinds(dir),
            });
        }
        check_trusted(&path)?;
        let lib = Arc::new(open(&path, kind)?);
        self.loaded.insert(path, lib.clone());
        Ok(lib)
    }
}

/// The kinds whose plugins are present in `dir`, for error messages.
pub fn available_kinds(dir: &Path) -> String {
    let mut kinds: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("libsited_plugin_")?
                    .strip_suffix(".so")?
                    .to_string(),
            )
        })
        .collect();
    kinds.sort();
    if kinds.is_empty() {
        format!("none in {}", dir.display())
    } else {
        kinds.join(", ")
    }
}

/// Refuses a plugin file (or its directory) that someone other than root or sited's own
/// user could have written: loading it would run their code as sited.
pub fn check_trusted(path: &Path) -> Result<(), Error> {
    let real = std::fs::canonicalize(path).map_err(|e| Error::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for p in [&real, &dir] {
        let meta = std::fs::metadata(p).map_err(|e| Error::Open {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(Error::Untrusted {
                path: p.clone(),
                reason: format!(
                    "it is owned by uid {}, not root or sited's user (uid {me})",
                    meta.uid()
                ),
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::Untrusted {
                path: p.clone(),
                reason: format!(
                    "it is group- or world-writable (mode {:o})",
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    Ok(())
}

fn open(path: &Path, kind: &str) -> Result<PluginLibrary, Error> {
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
    // SAFETY: loading a library runs its initialisers; check_trusted established that only
    // root or sited's own user could have put this file here, which is the trust we extend.
    let library =
        unsafe { libloading::os::unix::Library::open(Some(path), flags) }.map_err(|e| {
            Error::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        })?;
    // SAFETY: the symbol's type is fixed by the ABI (`QueryFn`); a library that exports the
    // name with another type is not a sited plugin and breaks the contract it claims.
    let query: QueryFn = unsafe { library.get::<QueryFn>(abi::QUERY_SYMBOL.as_bytes()) }
        .map(|sym| *sym)
        .map_err(|_| Error::NotAPlugin {
            path: path.to_path_buf(),
        })?;
    let ours = abi::SUPPORTED_ABI_VERSIONS;
    // SAFETY: we pass a valid slice; the plugin returns null or a pointer to a static descriptor.
    let raw = unsafe { query(ours.as_ptr(), ours.len()) };
    if raw.is_null() {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            detail: format!(
                "it speaks none of the plugin ABI versions this sited speaks ({ours:?})"
            ),
        });
    }
    // SAFETY: non-null and, by the ABI, a static descriptor that lives as long as the library,
    // which is never unloaded (RTLD_NODELETE, and we keep the handle).
    let descriptor: &'static PluginDescriptor = unsafe { &*raw };
    if !ours.contains(&descriptor.abi_version) {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            detail: format!(
                "it answered with ABI version {} but sited speaks {ours:?}",
                descriptor.abi_version
            ),
        });
    }
    if (descriptor.size as usize) < std::mem::size_of::<PluginDescriptor>() {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            detail: format!(
                "its ABI v{} descriptor is {} bytes, shorter than the {} this sited expects",
                descriptor.abi_version,
                descriptor.size,
                std::mem::size_of::<PluginDescriptor>()
            ),
        });
    }
    // SAFETY: the descriptor's strings are static UTF-8 by the ABI; from_utf8 checks anyway.
    let (found_kind, version) = unsafe { (descriptor.kind.to_str(), descriptor.version.to_str()) };
    let found_kind = found_kind.map_err(|_| Error::NotAPlugin {
        path: path.to_path_buf(),
    })?;
    if found_kind != kind {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            detail: format!("it implements kind \"{found_kind}\", not \"{kind}\""),
        });
    }
    let role = match descriptor.role {
        abi::ROLE_INPUT => Role::Input,
        abi::ROLE_OUTPUT => Role::Output,
        other => {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                detail: format!("it declares an unknown role {other}"),
            });
        }
    };
    Ok(PluginLibrary {
        kind: kind.to_string(),
        path: path.to_path_buf(),
        version: version.unwrap_or("?").to_string(),
        role,
        abi_version: descriptor.abi_version,
        descriptor,
        _library: library,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_plugin_names_the_file_and_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("libsited_plugin_led.so"), b"").expect("write");
        let err = Libraries::new().load(dir.path(), "servo").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("libsited_plugin_servo.so"), "{text}");
        assert!(text.contains("led"), "{text}");
    }

    #[test]
    fn world_writable_plugin_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libsited_plugin_led.so");
        std::fs::write(&path, b"not an elf").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = Libraries::new().load(dir.path(), "led").unwrap_err();
        assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_library_gives_an_open_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libsited_plugin_led.so");
        std::fs::write(&path, b"not an elf").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = Libraries::new().load(dir.path(), "led").unwrap_err();
        assert!(matches!(err, Error::Open { .. }), "{err}");
    }
}
