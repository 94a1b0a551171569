//! Jobs: what they ask for ([`spec`]), how they are kept ([`queue`]), who runs
//! them ([`worker`]), what running one means ([`runner`]), how one fails ([`error`]) and who is told when
//! they end ([`webhook`]).

pub mod error;
pub mod model;
pub mod queue;
pub mod runner;
pub mod spec;
pub mod webhook;
pub mod worker;
