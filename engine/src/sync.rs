//! The two directions: [`push`] (the folder becomes commits of its device) and
//! [`pull`] (the merged state of every device's log becomes the folder);
//! the [`heads`] markers tell a step which logs grew.

pub mod heads;
pub mod pull;
pub mod push;
