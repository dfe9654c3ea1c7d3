//! [`writes_pass_through!`]: the `AsyncWrite` of a stream wrapper that
//! filters only what is read (the inflater, the read budget): every write
//! goes to the wrapped stream as it is, vectored writes too.

/// `impl AsyncWrite for $ty<S>`, each method handed to `self.$field`;
/// with `on_shutdown: $hook`, `self.$hook()` is called first as the
/// wrapper's side is shut.
macro_rules! writes_pass_through {
    ($ty:ident, $field:ident) => {
        $crate::passthrough::writes_pass_through!($ty, $field, on_shutdown: _no_hook);
        impl<S> $ty<S> {
            fn _no_hook(&mut self) {}
        }
    };
    ($ty:ident, $field:ident, on_shutdown: $hook:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.$hook();
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

pub(crate) use writes_pass_through;
