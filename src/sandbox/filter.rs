//! The system call allow-list (seccomp-bpf, built with `seccompiler`).
//!
//! What GStreamer, GLib, x264, the libav decoders, the image codecs and Rust's
//! runtime call while they decode and encode files (collected with `strace -f`
//! over transcodes, stills, storyboards and photos), and nothing else. Every
//! other call fails with `EPERM`, notably: `socket` (only `socketpair`, which
//! GStreamer's poll uses), `connect`, `execve`, `fork` (a `clone` without
//! `CLONE_THREAD`), `ptrace`, `mount`, `process_vm_*`, `kill` of another
//! process, and every `ioctl` but a few terminal queries.
//!
//! `clone3` answers `ENOSYS` instead (a second, later filter), so glibc
//! falls back to `clone`, whose flags a filter can check.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::SandboxError;

/// Calls allowed whatever their arguments.
const ALLOWED: &[libc::c_long] = &[
    // Files.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_umask,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_memfd_create,
    // Waiting.
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_futex,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_sched_yield,
    // Socket pairs already created (socketpair itself is checked below).
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_msync,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_membarrier,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy,
    libc::SYS_mbind,
    // Threads and signals.
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigpending,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    // About the process itself.
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_getrandom,
    libc::SYS_getcpu,
    libc::SYS_capget,
];

/// The legacy calls of x86-64 that libraries still make (aarch64 has only
/// the `*at` forms).
#[cfg(target_arch = "x86_64")]
const ALLOWED_LEGACY: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_getdents,
    libc::SYS_mkdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_arch_prctl,
    libc::SYS_time,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_LEGACY: &[libc::c_long] = &[];

/// `prctl` options: thread names, naming anonymous memory, reading the
/// dumpable flag, and `no_new_privs` (set already; installing the second
/// filter sets it again).
const PRCTL_OPTIONS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_GET_DUMPABLE as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
    0x5356_4d41, // PR_SET_VMA (glibc names its arenas)
];

/// `ioctl` requests: is this a terminal, how wide, how much to read.
const IOCTL_REQUESTS: &[u64] = &[
    libc::TCGETS,
    libc::TIOCGWINSZ,
    libc::FIONREAD,
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
];

/// Installs the filters on every thread of the calling process.
pub fn apply() -> Result<(), SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let arch: TargetArch = std::env::consts::ARCH.try_into().map_err(|e| err(&e))?;
    let pid = u64::from(std::process::id());
    let main = SeccompFilter::new(
        rules(pid).map_err(|e| err(&e))?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| err(&e))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| err(&e))?;
    for filter in [main, clone3] {
        let program: BpfProgram = filter.try_into().map_err(|e| err(&e))?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| err(&e))?;
    }
    Ok(())
}

/// The allow-list: unconditional calls, and calls allowed for some
/// arguments only. `pid` is the confined process's own.
fn rules(pid: u64) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_LEGACY)
        .map(|&call| (call, vec![]))
        .collect();
    let eq = |arg: u8, value: u64| SeccompCondition::new(arg, Len::Qword, Op::Eq, value);
    let one_of = |arg: u8, len: Len, values: &[u64]| {
        values
            .iter()
            .map(|&v| SeccompRule::new(vec![SeccompCondition::new(arg, len.clone(), Op::Eq, v)?]))
            .collect::<Result<Vec<_>, _>>()
    };
    // Threads, never processes.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            Len::Qword,
            Op::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Socket pairs of the local kind only.
    rules.insert(
        libc::SYS_socketpair,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            Len::Dword,
            Op::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    // Signals to itself (abort, raise) only.
    rules.insert(libc::SYS_tgkill, vec![SeccompRule::new(vec![eq(0, pid)?])?]);
    rules.insert(
        libc::SYS_kill,
        vec![
            SeccompRule::new(vec![eq(0, pid)?])?,
            SeccompRule::new(vec![eq(0, 0)?])?,
        ],
    );
    // Its own limits, read or lowered (the hard limits are already down).
    rules.insert(
        libc::SYS_prlimit64,
        vec![
            SeccompRule::new(vec![eq(0, 0)?])?,
            SeccompRule::new(vec![eq(0, pid)?])?,
        ],
    );
    rules.insert(libc::SYS_prctl, one_of(0, Len::Dword, PRCTL_OPTIONS)?);
    // More filters (only ever narrower): the `clone3` one comes after this.
    rules.insert(
        libc::SYS_seccomp,
        one_of(0, Len::Dword, &[u64::from(libc::SECCOMP_SET_MODE_FILTER)])?,
    );
    rules.insert(libc::SYS_ioctl, one_of(1, Len::Dword, IOCTL_REQUESTS)?);
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let arch: TargetArch = std::env::consts::ARCH.try_into().unwrap();
        let filter = SeccompFilter::new(
            rules(42).unwrap(),
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )
        .unwrap();
        let program: BpfProgram = filter.try_into().unwrap();
        // The kernel takes at most 4096 instructions per filter.
        assert!(program.len() < 4096, "{} instructions", program.len());
    }

    #[test]
    fn exec_fork_sockets_and_ptrace_are_not_allowed() {
        let rules = rules(42).unwrap();
        for call in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_process_vm_readv,
            libc::SYS_setuid,
        ] {
            assert!(!rules.contains_key(&call), "{call}");
        }
        assert!(!rules[&libc::SYS_clone].is_empty());
    }
}
