//! The rest of Pingora's stream traits for the connection wrappers of this module
//! ([`HeadDeadline`], [`super::preface::Peeked`]): each passes them to the stream it wraps.
use super::HeadDeadline;
use pingora_core::protocols::Peek;
use std::io;

/// Implements Shutdown, UniqueID, Ssl and the digest traits for `$t` by passing each call to
/// its `inner` field.
macro_rules! pass_to_inner {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl pingora_core::protocols::Shutdown for $t {
            async fn shutdown(&mut self) {
                self.inner.shutdown().await
            }
        }

        impl pingora_core::protocols::UniqueID for $t {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                self.inner.id()
            }
        }

        impl pingora_core::protocols::Ssl for $t {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }
            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }
            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl pingora_core::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                self.inner.get_timing_digest()
            }
            fn get_read_pending_time(&self) -> std::time::Duration {
                self.inner.get_read_pending_time()
            }
            fn get_write_pending_time(&self) -> std::time::Duration {
                self.inner.get_write_pending_time()
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                self.inner.get_proxy_digest()
            }
            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                self.inner.set_proxy_digest(digest)
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $t {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                self.inner.get_socket_digest()
            }
            fn set_socket_digest(&mut self, socket_digest: pingora_core::protocols::SocketDigest) {
                self.inner.set_socket_digest(socket_digest)
            }
        }
    };
}
pub(super) use pass_to_inner;

pass_to_inner!(HeadDeadline);

#[async_trait::async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
