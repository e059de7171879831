//! The process's open-file limit: raised at start to the hard limit (the soft default, often
//! 1024, only protects `select()` users, and sited uses epoll; every hub client needs one),
//! and read by the hub to leave room for the files sited itself needs.

/// Raises the soft open-file limit to the hard one and returns it. The soft default (often
/// 1024) only protects `select()` users, and sited uses epoll; every hub client needs one.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The soft open-file limit now (u64::MAX if unlimited or unknown).
pub fn fd_limit() -> u64 {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => soft,
        _ => u64::MAX,
    }
}
