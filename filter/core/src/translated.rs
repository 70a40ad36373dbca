//! What a translation hands back: the body for the other side, and the tokens Bedrock reported in
//! it, read in the same pass. Shared by every translator, the metrics and the cost weights.

/// Tokens one request consumed, as Bedrock counted them. Cached input is counted apart from `input`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

/// A whole response body translated for the caller, with the tokens Bedrock reported in it,
/// read in the same pass (the body is not parsed a second time for usage).
#[derive(Debug)]
pub struct TranslatedBody {
    pub body: Vec<u8>,
    pub usage: Option<TokenUsage>,
}

impl TranslatedBody {
    /// A body that reports no usage (count-tokens answers, errors).
    pub fn without_usage(body: Vec<u8>) -> Self {
        TranslatedBody { body, usage: None }
    }
}
