//! One partition's log: RecordBatch bytes in segment files, their indexes, the
//! O_DIRECT write path, recovery, and the `Partition` that ties them together.
pub mod aligned;
pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod compression;
pub mod hw_checkpoint;
pub mod index;
pub mod log_start;
pub mod open;
pub mod partition;
pub mod producer;
pub mod read;
pub mod records;
pub mod recovery;
pub mod replica;
pub mod segment;
pub mod writer;
