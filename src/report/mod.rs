//! What a run leaves behind: the results schema (JSON, written atomically) and the terminal
//! table. Nothing here names a transport; rows are whatever the results hold.

pub mod results;
pub mod table;
