#![allow(dead_code)]

//! An in-process CQL v4 server for tests: the `kassandra` in-memory engine
//! behind a TCP listener on loopback, so the real `scylla` driver talks the
//! real protocol to it. It answers plain statements (create, insert, update,
//! select with `=` restrictions, delete, batches); it has no lightweight
//! transactions, no range restrictions and no TTLs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use kassandra::error::DbError;
use kassandra::frame::request::Request;
use kassandra::frame::response::{error::Error, Response};
use kassandra::frame::{request_stream, response_sink};
use kassandra::KassandraSession;
use tokio::net::{TcpListener, TcpStream};

/// A running server; it stops with [`CqlServer::stop`] or with the test process.
pub struct CqlServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CqlServer {
    /// Starts the server on its own thread and runtime and returns once it
    /// accepts connections.
    pub fn start() -> CqlServer {
        let engine = Arc::new(Mutex::new(KassandraSession::new()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).expect("non-blocking");
        let addr = std_listener.local_addr().expect("local addr");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cql-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(serve_connection(stream, engine.clone()));
                                }
                            }
                        }
                    }
                });
                // Dropping the runtime ends every connection task: clients
                // see their connections closed, as with a crashed node.
                drop(rt);
            })
            .expect("spawn cql server");
        CqlServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops listening and closes every connection.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_connection(mut stream: TcpStream, engine: Arc<Mutex<KassandraSession>>) {
    let (read, write) = stream.split();
    let mut frames = request_stream(read);
    let mut sink = response_sink(write);
    while let Some(frame) = frames.next().await {
        let Ok((params, opcode, body)) = frame else {
            break;
        };
        let response = match Request::deserialize(opcode, &body, params.flags) {
            Ok(request) => answer(request, &engine),
            Err(_) => Response::Error(Error::new(DbError::ProtocolError, "unparsable request")),
        };
        if sink.send((response, params.stream)).await.is_err() {
            break;
        }
    }
}

fn answer(request: Request<'_>, engine: &Mutex<KassandraSession>) -> Response {
    let mut engine = engine.lock().unwrap_or_else(|p| p.into_inner());
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::Query(q) => engine.process(q),
        Request::Prepare(q) => engine.prepare(q),
        Request::Execute(e) => engine.execute(e),
        Request::Batch(b) => engine.process_batch(b),
        Request::AuthResponse => {
            return Response::Error(Error::new(
                DbError::ProtocolError,
                "authentication is not supported",
            ))
        }
    };
    match result {
        Ok(r) => Response::Result(r),
        Err(e) => Response::Error(e),
    }
}
