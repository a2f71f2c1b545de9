//! Memory that is real: each stream's receive window is reserved on its scope before the
//! stream is accepted, each connection's transport buffers on its connection scope, and memory
//! limits refuse what does not fit, with a memory error, as the metrics show.

mod common;

use common::{Net, Protocols, Running, assert_all_released, counted, hold_inbound, open};
use libp2p_stream::OpenStreamError;
use prometheus_client::{encoding::text::encode, registry::Registry};
use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};
use rcmgr_libp2p::Buffers;
use rcmgr_prometheus::PrometheusReporter;

const FLOOD: &str = "/flood/1.0.0";
/// Streams whose windows the flooder's peer scope has room for.
const ROOM: u64 = 10;

fn window() -> u64 {
    Buffers::default().stream_window() as u64
}

/// What a TCP connection reserves for its transport.
fn tcp_connection() -> u64 {
    Buffers::default().connection_memory(&"/ip4/127.0.0.1/tcp/1".parse().expect("an address"))
        as u64
}

fn assert_unsupported(result: Result<libp2p::Stream, OpenStreamError>) {
    match result {
        Err(OpenStreamError::UnsupportedProtocol(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_flood_is_refused_by_memory_on_the_muxers_reservations() {
    // No stream limit anywhere: only memory can stop the flood.
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default.memory = tcp_connection() + ROOM * window();
    let (server_rm, refusals) = counted(limits);
    let server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    hold_inbound(&server, FLOOD);
    let flooder_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut flooder = Running::client(Net::Tcp, &flooder_rm, Protocols::NONE);
    flooder.connect(server.address(), server.peer).await;
    let flooder_peer = flooder.peer;
    common::eventually(
        "the connection's buffers in the flooder's peer scope",
        || server_rm.peer(&flooder_peer).stat().memory == tcp_connection(),
    )
    .await;

    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10 * ROOM {
        match open(&flooder, server.peer, FLOOD).await {
            Ok(stream) => held.push(stream),
            Err(error) => {
                assert_unsupported(Err(error));
                refused += 1;
            }
        }
    }
    assert_eq!(held.len() as u64, ROOM);
    assert_eq!(refused, 9 * ROOM);
    let flooder_scope = server_rm.peer(&flooder.peer).stat();
    assert_eq!(flooder_scope.streams_inbound as u64, ROOM);
    assert_eq!(flooder_scope.memory, tcp_connection() + ROOM * window());
    assert_eq!(server_rm.protocol(FLOOD).stat().memory, ROOM * window());
    // Every refusal was the peer's memory, refused on the muxer's reservation.
    assert_eq!(refusals.count(), refused);
    assert_eq!(refusals.memory(), refused);

    // Another peer has memory of its own.
    let honest_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut honest = Running::client(Net::Tcp, &honest_rm, Protocols::NONE);
    honest.connect(server.address(), server.peer).await;
    let _theirs = open(&honest, server.peer, FLOOD)
        .await
        .expect("another peer's stream");

    drop((held, _theirs));
    for node in [server, flooder, honest] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &flooder_rm, &honest_rm]).await;
}

/// The value of the metric line that starts with `series` (name and labels) in `text`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("metrics encode");
    text
}

#[tokio::test]
async fn lowering_the_memory_limit_refuses_new_streams_with_a_memory_error_and_metrics_show_it() {
    let mut registry = Registry::default();
    let server_rm = PrometheusReporter::install(
        ResourceManager::builder(ConcreteLimitConfig::infinite()),
        &mut registry,
    )
    .expect("valid options");
    let server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    hold_inbound(&server, FLOOD);
    let (client_rm, client_refusals) = counted(ConcreteLimitConfig::infinite());
    let mut client = Running::client(Net::Tcp, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open(&client, server.peer, FLOOD).await.expect("a stream"));
    }
    common::eventually("the server to hold the streams", || {
        server_rm.protocol(FLOOD).stat().streams_inbound == 4
    })
    .await;
    // The metrics show the buffers: one connection's, and each stream's window, also in the
    // protocol's scope.
    let text = scrape(&registry);
    let system = r#"libp2p_rcmgr_memory{scope="system",protocol=""}"#;
    let protocol = format!(r#"libp2p_rcmgr_memory{{scope="protocol",protocol="{FLOOD}"}}"#);
    assert_eq!(
        metric(&text, system),
        Some((tcp_connection() + 4 * window()) as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, &protocol),
        Some((4 * window()) as f64),
        "{text}"
    );
    let blocked_memory =
        r#"libp2p_rcmgr_blocked_resources{dir="",scope="system",resource="memory"}"#;
    assert_eq!(
        metric(&text, blocked_memory),
        None,
        "no refusal yet: {text}"
    );

    // Lower the node's memory to what it holds: the next stream finds no room for its window.
    let mut lower = ConcreteLimitConfig::infinite();
    lower.system.memory = server_rm.system().stat().memory;
    server_rm.set_limits(lower);
    assert_unsupported(open(&client, server.peer, FLOOD).await);
    let text = scrape(&registry);
    assert_eq!(metric(&text, blocked_memory), Some(1.0), "{text}");
    assert_eq!(server_rm.protocol(FLOOD).stat().streams_inbound, 4);

    // The same on the dialing side: its own memory refuses its outbound stream.
    let mut lower = ConcreteLimitConfig::infinite();
    lower.system.memory = client_rm.system().stat().memory;
    client_rm.set_limits(lower);
    assert_unsupported(open(&client, server.peer, FLOOD).await);
    assert_eq!(client_refusals.memory(), 1);

    // Raised again, streams open again.
    server_rm.set_limits(ConcreteLimitConfig::infinite());
    client_rm.set_limits(ConcreteLimitConfig::infinite());
    held.push(open(&client, server.peer, FLOOD).await.expect("room again"));

    drop(held);
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}
