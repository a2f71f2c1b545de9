//! The `--metrics` server: Prometheus' text format at `/metrics` over plain HTTP on a loopback
//! address, from a thread of its own, for as long as the simulation runs.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::error::CliError;

/// How often the server looks for a connection or the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A running metrics server; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` at `addr`, which must be a loopback address.
    ///
    /// # Errors
    ///
    /// [`CliError::Metrics`] for an address that is not loopback or cannot be bound.
    pub fn start(addr: SocketAddr, registry: Arc<Registry>) -> Result<Self, CliError> {
        let refuse = |reason: String| CliError::Metrics { addr, reason };
        if !addr.ip().is_loopback() {
            return Err(refuse("only loopback addresses are served".to_owned()));
        }
        let listener = TcpListener::bind(addr).map_err(|err| refuse(err.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|err| refuse(err.to_string()))?;
        let bound = listener
            .local_addr()
            .map_err(|err| refuse(err.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("metrics server".into())
            .spawn(move || serve(&listener, &registry, &flag))
            .map_err(|err| refuse(err.to_string()))?;
        Ok(MetricsServer {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port picked, when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Ordering: Relaxed. The flag carries no data; the join below waits for the thread.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    // Ordering: Relaxed, as for every use of the flag.
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that misbehaves only loses its own answer.
                let _ = answer(stream, registry);
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Reads one request and answers it: the metrics for `GET /metrics`, 404 otherwise.
fn answer(stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        let mut text = String::new();
        match encode(&mut text, registry) {
            Ok(()) => ("200 OK", text),
            Err(_) => ("500 Internal Server Error", String::new()),
        }
    } else {
        ("404 Not Found", "try /metrics\n".to_owned())
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
