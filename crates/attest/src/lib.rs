//! Verifies TEE evidence (Intel DCAP, simulated) and appraises its claims with a policy.
#![forbid(unsafe_code)]
