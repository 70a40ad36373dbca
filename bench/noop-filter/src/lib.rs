//! The benchmark's floor (configuration W): placed where the gateway's two stages sit, it holds
//! the headers until the whole body has arrived, as both stages must, and does nothing else. What
//! Envoy and V8 charge for that is the part of the gateway's cost no filter code can remove.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
    }}

    struct NoopRoot;

    impl Context for NoopRoot {}

    impl RootContext for NoopRoot {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(WaitForBody))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct WaitForBody;

    impl Context for WaitForBody {}

    fn continue_at_end(end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    impl HttpContext for WaitForBody {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            continue_at_end(end_of_stream)
        }

        fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
            continue_at_end(end_of_stream)
        }
    }
}
