//! The scheduler's task table is rask-core's [`Table`] (values in a vector of slots, an index
//! of slot numbers by key): tasks refer to each other (and workers, clients and queues to them)
//! by its ids, and a key is looked up only where it arrives in a message.

pub(crate) use rask_core::table::{SlotId as TaskId, Table, hash_table_bytes, key_hash};
