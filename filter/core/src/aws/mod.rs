//! AWS below Bedrock: SigV4 and its timestamps, the credential providers' state machine (Pod
//! Identity, IRSA through STS, IMDS, static keys) and the broker that decides when each worker
//! fetches and what becomes of the requests that wait. Nothing here knows Bedrock or the callers.

pub mod broker;
pub mod credentials;
pub mod sigv4;
pub mod time;
