//! Veil's validator node: Commonware simplex BFT consensus and authenticated p2p around the
//! encrypted ledger (`veil-ledger`), with a mempool, durable state and the RPC.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod bench;
pub mod block;
pub mod core;
mod error;
pub mod gossip;
pub mod rpc;
pub mod run;
pub mod seedshare;
pub mod store;
pub mod validator;

pub use error::{NodeError, Result};
