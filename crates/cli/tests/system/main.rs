//! The system tests of `txbank`: real name servers, brokers and banks (processes, or a
//! bank in this process where one bank and no crash will do), on free ports, each test
//! in its own folder. One test binary, so that the suite compiles and links the system
//! once rather than once per file.

#![recursion_limit = "512"] // the RocketMQ client's deeply nested futures (topics)

mod support;

mod api_contract;
mod archive;
mod bad_input;
mod batch;
mod dashboard;
mod deployment;
mod directions;
mod final_states;
mod keys;
mod limits;
mod queued;
mod redrive;
mod security;
mod seed_messages;
mod topics;
mod transfers;
mod up;
mod upgrade;
