//! Jobs: what they ask for ([`spec`]), how they are kept ([`queue`]), who runs
//! them ([`worker`]), what running one means ([`runner`]) and who is told when
//! they end ([`webhook`]).

pub mod model;
pub mod queue;
pub mod runner;
pub mod spec;
pub mod webhook;
pub mod worker;
