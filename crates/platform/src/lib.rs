//! Produces TEE evidence and seals data on the local platform (simulated TEE, Intel TDX).
#![forbid(unsafe_code)]
