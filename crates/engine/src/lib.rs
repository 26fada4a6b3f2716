//! The inference Engine trait and its llama.cpp backend; knows nothing else of Veil.
#![forbid(unsafe_code)]
