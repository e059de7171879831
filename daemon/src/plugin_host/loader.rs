//! Finds and opens plugin libraries. A kind `button` lives in
//! `<plugin-dir>/libsited_plugin_button.so`. Libraries are opened once with `RTLD_NOW |
//! RTLD_NODELETE` and never unloaded; a reload re-creates instances, not libraries.
//!
//! Loading a plugin runs its code, so the file checked must be the file loaded, and nobody but
//! root or sited's own user may have been able to put it there (OpenSSH's `safe_path`):
//! - every directory from `/` down to the plugin directory is owned by root or sited's user and
//!   writable by nobody else, except a root-owned sticky directory such as `/tmp` on the way
//!   (not the plugin directory itself);
//! - each directory is opened from its parent without following links (`O_NOFOLLOW`), and the
//!   file from the last one, so nothing can be swapped between the check and the load; a link
//!   on the way is read from the directory holding it, which has passed the check, and
//!   followed from there;
//! - the file is a regular file (not a link), with the same owners and no group or world
//!   write bit, checked with `fstat` on what was opened;
//! - and it is loaded as `/proc/self/fd/N`, the very file checked.
//!
//! The descriptor a plugin returns is read through raw pointers first (its `size` and
//! version), then copied, so an older plugin's shorter descriptor gets defaults for what it
//! lacks, and a null entry point refuses the plugin here rather than crashing a call later.

use super::Error;
use site_plugin_api::Role;
use site_plugin_api::abi::{self, PluginDescriptor, QueryFn};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A plugin's entry points, all present (checked at load).
#[derive(Clone, Copy)]
pub(super) struct EntryPoints {
    pub validate: abi::ValidateFn,
    pub create: abi::CreateFn,
    pub destroy: abi::DestroyFn,
    pub on_edge: abi::OnEdgeFn,
    pub on_timer: abi::OnTimerFn,
    pub command: abi::CommandFn,
    pub simulate: abi::SimulateFn,
    pub safe_state: abi::SafeStateFn,
}

/// An opened plugin library and the descriptor it chose.
pub struct PluginLibrary {
    pub kind: String,
    pub path: PathBuf,
    pub version: String,
    pub role: Role,
    /// The major version agreed on, and the minor the plugin was built against.
    pub abi_version: u32,
    pub abi_minor: u32,
    pub description: String,
    pub(super) entry: EntryPoints,
    /// Kept so the handle is never closed (RTLD_NODELETE also pins the mapping).
    _library: libloading::os::unix::Library,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("version", &self.version)
            .field(
                "abi",
                &format_args!("{}.{}", self.abi_version, self.abi_minor),
            )
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
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(Error::NotFound {
                kind: kind.to_string(),
                path,
                available: available_kinds(dir),
            });
        }
        let file = open_trusted(dir, &file_name(kind))?;
        let lib = Arc::new(open(&path, file, kind)?);
        log::info!(
            "plugin {kind} {} (ABI {}.{}){}{} from {}",
            lib.version,
            lib.abi_version,
            lib.abi_minor,
            if lib.description.is_empty() { "" } else { ": " },
            lib.description,
            path.display()
        );
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

/// Opens `dir/name` for loading, after checking every directory on the way and the file itself
/// (see the module comment). Returns the open file: load it through its descriptor.
pub fn open_trusted(dir: &Path, name: &str) -> Result<File, Error> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let me = nix::unistd::geteuid().as_raw();
    let open_error = |path: &Path, e: nix::Error| Error::Open {
        path: path.to_path_buf(),
        detail: e.desc().to_string(),
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(io_error(dir))?.join(dir)
    };
    // What is left to walk, a component at a time. A symbolic link on the way (a merged /usr's
    // /lib, say) is followed by reading it from the directory that holds it, which has passed
    // the check already: only root or sited's user can have made it, or can change it.
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = absolute
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    // The root through /proc/self/root, the kernel's own link to it: qemu-user (the Pi's test
    // suite) maps an open of "/" itself to its sysroot. "/" where /proc is not mounted.
    let root_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root: OwnedFd = nix::fcntl::open("/proc/self/root", root_flags, Mode::empty())
        .or_else(|_| nix::fcntl::open("/", flags, Mode::empty()))
        .map_err(|e| open_error(Path::new("/"), e))?;
    let checked = |path: &Path, fd: &OwnedFd, last: bool| -> Result<(), Error> {
        check_dir(
            path,
            &File::from(fd.try_clone().map_err(io_error(path))?),
            me,
            last,
        )
    };
    checked(Path::new("/"), &root, pending.is_empty())?;
    // The directories walked so far, each open and checked, the root first.
    let mut stack: Vec<(PathBuf, OwnedFd)> = vec![(PathBuf::from("/"), root)];
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (parent, parent_fd) = stack.last().expect("the root stays");
        let path = parent.join(&part);
        match openat(parent_fd, part.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => {
                checked(&path, &fd, pending.is_empty())?;
                stack.push((path, fd));
            }
            Err(nix::Error::ELOOP | nix::Error::ENOTDIR) => {
                let target = nix::fcntl::readlinkat(parent_fd, part.as_os_str())
                    .map_err(|_| open_error(&path, nix::Error::ENOTDIR))?;
                links += 1;
                if links > 40 {
                    return Err(open_error(&path, nix::Error::ELOOP));
                }
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push_front(p.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Err(e) => return Err(open_error(&path, e)),
        }
    }
    let (at, fd) = stack.pop().expect("the root stays");
    let path = at.join(name);
    let file = openat(
        &fd,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::Error::ELOOP => Error::Untrusted {
            path: path.clone(),
            reason: "it is a symbolic link; install the plugin file itself".into(),
        },
        e => open_error(&path, e),
    })?;
    let file = File::from(file);
    let meta = file.metadata().map_err(io_error(&path))?;
    if !meta.is_file() {
        return Err(Error::Untrusted {
            path,
            reason: "it is not a regular file".into(),
        });
    }
    check_owner_and_mode(&path, &meta, me, false)?;
    Ok(file)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// A directory on the way; `last`: the plugin directory itself, which gets no sticky-bit
/// exception (anyone could put a file, or a hard link to a root-owned library, there).
fn check_dir(path: &Path, dir: &File, me: u32, last: bool) -> Result<(), Error> {
    let meta = dir.metadata().map_err(io_error(path))?;
    check_owner_and_mode(path, &meta, me, !last)
}

/// Owned by root or `me`, and writable by nobody else; a directory on the way (`sticky_ok`)
/// may be world-writable only if root owns it and its sticky bit keeps others from renaming
/// what is not theirs (`/tmp`).
fn check_owner_and_mode(
    path: &Path,
    meta: &Metadata,
    me: u32,
    sticky_ok: bool,
) -> Result<(), Error> {
    let untrusted = |reason: String| Error::Untrusted {
        path: path.to_path_buf(),
        reason,
    };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(untrusted(format!(
            "it is owned by uid {}, not root or sited's user (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode();
    let sticky_root_dir = sticky_ok && meta.uid() == 0 && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Err(untrusted(format!(
            "it is group- or world-writable (mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

fn incompatible(path: &Path, detail: String) -> Error {
    Error::Incompatible {
        path: path.to_path_buf(),
        detail,
    }
}

fn entry_points(path: &Path, d: &PluginDescriptor) -> Result<EntryPoints, Error> {
    fn need<T>(path: &Path, f: Option<T>, name: &str) -> Result<T, Error> {
        f.ok_or_else(|| {
            incompatible(
                path,
                format!("its descriptor has no `{name}` function (a null pointer)"),
            )
        })
    }
    Ok(EntryPoints {
        validate: need(path, d.validate, "validate")?,
        create: need(path, d.create, "create")?,
        destroy: need(path, d.destroy, "destroy")?,
        on_edge: need(path, d.on_edge, "on_edge")?,
        on_timer: need(path, d.on_timer, "on_timer")?,
        command: need(path, d.command, "command")?,
        simulate: need(path, d.simulate, "simulate")?,
        safe_state: need(path, d.safe_state, "safe_state")?,
    })
}

/// Loads the checked `file` (through `/proc/self/fd`), asks it for its descriptor and checks it.
fn open(path: &Path, file: File, kind: &str) -> Result<PluginLibrary, Error> {
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    // SAFETY: loading a library runs its initialisers; open_trusted established that only
    // root or sited's own user could have put this file here, and by_fd is that very file.
    let library =
        unsafe { libloading::os::unix::Library::open(Some(&by_fd), flags) }.map_err(|e| {
            Error::Open {
                path: path.to_path_buf(),
                detail: e
                    .to_string()
                    .replace(&by_fd.display().to_string(), &path.display().to_string()),
            }
        })?;
    // The loader now knows the library by the name `/proc/self/fd/N` and answers a later
    // dlopen of the same name with it, whatever file N is then. Libraries are never unloaded,
    // so N must never be reused: the descriptor stays open for the life of the process (one
    // per plugin file).
    let _kept_open_for_good = file.into_raw_fd();
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
        return Err(incompatible(
            path,
            format!("it speaks none of the plugin ABI versions this sited speaks ({ours:?})"),
        ));
    }
    // SAFETY: non-null and, by the ABI, a static descriptor that lives as long as the library,
    // which is never unloaded (RTLD_NODELETE, and we keep the handle).
    let descriptor = unsafe { abi::read_descriptor(raw) }.map_err(|e| incompatible(path, e))?;
    let entry = entry_points(path, &descriptor)?;
    let text = |s: abi::StrRef, what: &str| {
        // SAFETY: the descriptor's strings are static by the ABI; to_str checks null and UTF-8.
        unsafe { s.to_str() }
            .map(str::to_string)
            .map_err(|e| incompatible(path, format!("its {what} is {e}")))
    };
    let found_kind = text(descriptor.kind, "kind")?;
    if found_kind != kind {
        return Err(incompatible(
            path,
            format!("it implements kind \"{found_kind}\", not \"{kind}\""),
        ));
    }
    let role = match descriptor.role {
        abi::ROLE_INPUT => Role::Input,
        abi::ROLE_OUTPUT => Role::Output,
        other => {
            return Err(incompatible(
                path,
                format!("it declares an unknown role {other}"),
            ));
        }
    };
    Ok(PluginLibrary {
        kind: kind.to_string(),
        path: path.to_path_buf(),
        version: text(descriptor.version, "version")?,
        role,
        abi_version: descriptor.abi_version,
        abi_minor: descriptor.abi_minor,
        description: text(descriptor.description, "description")?,
        entry,
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
