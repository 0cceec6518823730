//! Serving threads: where HTTP and HTTPS connections run when `http.threads` asks for them,
//! and where a plain-HTTP connection moves once its first request is HLS or DASH
//! (`http.hls_threads`). Each thread drives a single-threaded runtime, and a connection stays
//! on the thread it was handed to, as an nginx worker keeps its connections. On the shared work-stealing
//! runtime every burst of requests also wakes the other worker to steal half of it, which
//! costs HLS serving about 6% of the server's CPU; but a publisher on the main runtime then
//! wakes each FLV player across threads, a system call per wake, so FLV fan-out costs more
//! (docs/configuration.md, "Serving threads").
//!
//! Publishers, the hub and everything else stay on the main runtime; a connection reaches
//! them through the same thread-safe handles as before.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtime a component was made on (the main one), for the publishers a connection
/// starts on behalf of a whole stream (an on-demand relay pull, a pull from a peer pod): they
/// run where RTMP publishers run, not on the serving thread of the player that asked first.
/// Consumers such as an HLS segmenter started by a request stay on that request's thread,
/// as players do.
#[derive(Clone, Debug)]
pub struct MainRuntime(Option<Handle>);

impl MainRuntime {
    /// The runtime of the caller, if any (else tasks go wherever they are spawned from).
    pub fn here() -> MainRuntime {
        MainRuntime(Handle::try_current().ok())
    }

    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

/// The threads and their runtimes. [`ServingThreads::stop`] (or dropping it) stops them;
/// connections still on them are dropped with their runtime, as the main runtime drops its
/// own at exit.
pub struct ServingThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: Mutex<Vec<oneshot::Sender<()>>>,
}

impl ServingThreads {
    /// Starts `n` threads (at least one).
    pub fn start(n: usize) -> std::io::Result<ServingThreads> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("ferrocast-serve-{i}"))
                .spawn(move || {
                    // Resolves when the sender is dropped.
                    let _ = rt.block_on(stopped);
                    rt.shutdown_background();
                })?;
        }
        Ok(ServingThreads {
            handles,
            next: AtomicUsize::new(0),
            stop: Mutex::new(stops),
        })
    }

    /// Stops every thread: the connections on them end now.
    pub fn stop(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Moves an accepted socket to the next thread (round robin) and runs `serve` with it
    /// there. The socket leaves this runtime's reactor and joins that thread's.
    pub fn serve<F, Fut>(&self, socket: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot hand the connection to a serving thread: {e}");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(socket) => serve(socket).await,
                Err(e) => tracing::warn!("cannot serve the connection: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Accepts `n` connections and hands each to `threads`, which answers with the name of
    /// the thread serving it; returns the names in connection order.
    async fn served_by(threads: &Arc<ServingThreads>, n: usize) -> Vec<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut names = Vec::new();
        for _ in 0..n {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            threads.serve(socket, |mut socket| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                socket.write_all(name.as_bytes()).await.unwrap();
            });
            let mut name = String::new();
            client.read_to_string(&mut name).await.unwrap();
            names.push(name);
        }
        names
    }

    #[tokio::test]
    async fn connections_are_dealt_round_robin_to_the_threads() {
        let threads = Arc::new(ServingThreads::start(2).unwrap());
        let names = served_by(&threads, 4).await;
        assert_eq!(
            names,
            [
                "ferrocast-serve-0",
                "ferrocast-serve-1",
                "ferrocast-serve-0",
                "ferrocast-serve-1"
            ]
        );
    }

    /// An on-demand relay pull or a pull from a peer pod is started by the first player's
    /// connection, on its serving thread; it must run on the main runtime with the publishers.
    #[test]
    fn work_a_connection_starts_for_a_whole_stream_runs_on_the_main_runtime() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferrocast-main")
            .enable_all()
            .build()
            .unwrap();
        let rt = main.block_on(async { MainRuntime::here() });
        let threads = ServingThreads::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        main.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            threads.serve(socket, move |_socket| async move {
                let name = || std::thread::current().name().unwrap_or("").to_string();
                let (on_main, local) = (tx.clone(), tx);
                rt.spawn(async move { on_main.send(("main", name())).unwrap() });
                // For contrast: a plain spawn stays on the connection's thread.
                tokio::spawn(async move { local.send(("local", name())).unwrap() });
            });
        });
        let mut ran: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .collect();
        ran.sort();
        assert_eq!(
            ran,
            [
                ("local", "ferrocast-serve-0".to_string()),
                ("main", "ferrocast-main".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn stop_ends_the_connections_on_the_threads() {
        let threads = Arc::new(ServingThreads::start(1).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let (started, running) = oneshot::channel();
        threads.serve(socket, |socket| async move {
            let _ = started.send(());
            // Holds the connection open until its runtime is stopped.
            std::future::pending::<()>().await;
            drop(socket);
        });
        running.await.unwrap();
        threads.stop();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "the socket closes with its thread: {read:?}");
    }
}
