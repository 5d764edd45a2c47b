//! pushbench: matched servers and clients for WebSocket, Server-Sent Events (over HTTP/1.1 and
//! HTTP/2), long polling, short polling, webhooks, gRPC streaming, MQTT and raw TCP deliver one
//! identical, deterministic event stream over real sockets, so the transports can be compared
//! by measurement.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions of the subcommands, flags turned into validated options.
//! - [`event`]: the stream spec, events, their wire encoding, the stream digest and the
//!   per-subscriber tally.
//! - [`payload`]: what payload bytes look like: random text, or JSON shaped like real events.
//! - [`workload`]: the workload's shape (broadcast, topics, unicast): the streams a server
//!   publishes, which of them each subscriber follows, and where an event belongs.
//! - [`clock`]: CLOCK_MONOTONIC nanoseconds, the one clock shared by server and load processes.
//! - [`upstream`]: messages subscribers send to the server: their wire form, each sender's
//!   schedule, and the server's ledger of them.
//! - [`hub`]: the server's published stream, read by every transport with its own cursor.
//! - [`link`]: a bad link between subscribers and the server, emulated by a TCP proxy with
//!   Toxiproxy's toxics.
//! - [`protocol`]: the typed protocol between `pushbench run` and its child processes, and
//!   its messages: jobs, parts, stats, commands, the children themselves, and how many
//!   processes a side needs for its sockets.
//! - [`publisher`]: publishes the stream into the hub on its schedule.
//! - [`profile`]: servers pushbench did not write, each described by a profile file
//!   (`servers/*.toml`), and the `server` setting that names one.
//! - [`outside`]: such a server as a row's server: started on `serve`'s address, the stream
//!   published through it, its processes measured.
//! - [`results`]: the results schema (JSON) with its migrations, the typed row key, the
//!   validated scenario a run measured, the figure catalogue and rows, and number formatting:
//!   the layer below `report` and `recommend`.
//! - [`document`]: a report as blocks (headings, paragraphs, tables, figures), written as
//!   Markdown or HTML.
//! - [`report`]: the terminal table, the report (Markdown + HTML with SVG plots) and the
//!   comparison of two runs.
//! - [`recommend`]: a design's constraints and measured results in, ranked transports with
//!   reasons out.
//! - [`measure`]: `recommend --measure`: a design made into runs scaled to this machine (every
//!   scaling stated), run, and judged from them.
//! - [`scenario`]: flags and scenario TOML merged into one validated scenario, refusing a
//!   setting no selected transport takes.
//! - [`transport`]: the contract every transport implements, one folder per transport holding
//!   its declaration and each implementation of its server and client, and what they share:
//!   the `Target` a client subscribes to, credentials, HTTP serving, the counting listener,
//!   the client dialer, TLS, Standard Webhooks signing and the webhook endpoint check.
//! - [`metrics`]: latency histograms recorded per thread, socket counters, process CPU and RSS,
//!   the machine's steal time.
//! - [`settings`]: the typed setting declaration and the values that travel, below everything.
//! - [`setting_flags`]: the declared settings (the transports' and the harness's) as flags and
//!   scenario keys.
//! - [`credential_flags`]: the transports' declared credentials as flags and environment
//!   variables.
//! - [`serve`]: the server under test as a unit (`pushbench serve`).
//! - [`harness`]: subscribers against a server, judged against the source (`pushbench load`),
//!   load worker processes and the parts they hand back, the `pushbench run` driver, and the
//!   settings it acts on itself (link, proxy, restart).

pub mod cli;
pub mod clock;
pub mod credential_flags;
pub mod document;
pub mod event;
pub mod harness;
pub mod hub;
pub mod link;
pub mod measure;
pub mod metrics;
pub mod outside;
pub mod payload;
pub mod profile;
pub mod protocol;
pub mod publisher;
pub mod recommend;
pub mod report;
pub mod results;
pub mod scenario;
pub mod serve;
pub mod setting_flags;
pub mod settings;
pub mod transport;
pub mod upstream;
pub mod workload;
