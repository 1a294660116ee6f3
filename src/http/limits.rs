//! The HTTP listener under `max_connections`: connections beyond the shared
//! cap are closed at once; WebSocket upgrades keep their permit.
//!
//! Each connection also carries a [`Cutoff`] that a handler can pull (it
//! reaches it as `ConnectInfo<Cutoff>`): the connection's I/O fails from
//! then on, even while a write waits for a client that does not read, so
//! hyper drops the connection. The live lobby feed uses it for clients that
//! do not keep up.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::infra::limits::ConnectionCap;

/// A TCP listener with a cap on open connections.
pub struct CappedListener {
    inner: TcpListener,
    cap: ConnectionCap,
}

impl CappedListener {
    /// Puts `inner` under `cap`.
    pub fn new(inner: TcpListener, cap: ConnectionCap) -> Self {
        CappedListener { inner, cap }
    }
}

/// A connection and its permit.
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    cutoff: Cutoff,
}

/// Ends one connection from inside a handler.
#[derive(Clone, Default)]
pub struct Cutoff(Arc<CutoffState>);

#[derive(Default)]
struct CutoffState {
    pulled: AtomicBool,
    /// The task waiting to write, woken when the cutoff is pulled.
    writer: AtomicWaker,
}

impl Cutoff {
    /// Makes the connection's reads and writes fail from now on.
    pub fn pull(&self) {
        self.0.pulled.store(true, Ordering::SeqCst);
        self.0.writer.wake();
    }

    fn check(&self) -> io::Result<()> {
        if self.0.pulled.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was cut off",
            ))
        } else {
            Ok(())
        }
    }
}

impl Connected<IncomingStream<'_, CappedListener>> for Cutoff {
    fn connect_info(stream: IncomingStream<'_, CappedListener>) -> Self {
        stream.io().cutoff.clone()
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Capped;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, try again.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.cap.try_admit() {
                Some(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Capped {
                            stream,
                            _permit: permit,
                            cutoff: Cutoff::default(),
                        },
                        addr,
                    );
                }
                None => drop(stream),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cutoff.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cutoff.check()?;
        self.cutoff.0.writer.register(cx.waker());
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cutoff.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cutoff.check()?;
        self.cutoff.0.writer.register(cx.waker());
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
