//! File and network access by Landlock: read-only system files, read-write
//! only the process's own folder, no TCP bind or connect, no signals to
//! processes outside the sandbox, no abstract UNIX sockets outside it.
//!
//! A rule holds on the file a path resolves to (symlinks such as `/lib` on
//! merged-/usr systems are followed when the rule is made).
//!
//! Best effort, as the `landlock` crate does it: a kernel without Landlock (or
//! with an older ABI) enforces what it has, and [`Enforced`] says so.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, RulesetAttr as _, RulesetCreatedAttr as _, RulesetStatus,
    Scope, path_beneath_rules,
};

use super::{Enforced, SandboxError};

/// The newest ABI this code asks for; older kernels get what they have.
const ABI_WANTED: ABI = ABI::V6;

pub fn restrict(read: &[PathBuf], write: &[PathBuf]) -> Result<Enforced, SandboxError> {
    let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let all = AccessFs::from_all(ABI_WANTED);
    // Reading never includes executing: the sandbox runs no program.
    let reading = AccessFs::ReadFile | AccessFs::ReadDir;
    let writing = all & !AccessFs::Execute;
    let status = landlock::Ruleset::default()
        .handle_access(all)
        .map_err(err)?
        .handle_access(AccessNet::from_all(ABI_WANTED))
        .map_err(err)?
        .scope(Scope::from_all(ABI_WANTED))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(read, reading))
        .map_err(err)?
        .add_rules(path_beneath_rules(write, writing))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::NoLandlock,
    })
}
