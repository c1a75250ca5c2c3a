//! (being written: see installer/src/lib.rs for the layout contract)
