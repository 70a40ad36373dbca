//! Anthropic's Messages API: sent to Claude on Bedrock as InvokeModel with Anthropic's own body
//! ([`invoke`]), and to every other model as Converse ([`converse`]).

pub mod converse;
pub mod invoke;
