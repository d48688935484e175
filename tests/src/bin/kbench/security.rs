//! `--security`: what TLS and SASL cost. One broker with a PLAINTEXT and a
//! SASL_SSL listener (TLS 1.3, SCRAM-SHA-512); kbench's protocol-level
//! producer and fetcher (our client crate, rustls on the client's side
//! too) write and read 1 KiB records over each in alternating rounds, so
//! that the VM's drift hits both alike; then SCRAM handshakes per second
//! at 4096 iterations (over SASL_PLAINTEXT, without TLS: the SCRAM cost
//! alone), client and broker on the same two cores.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client::sasl::{Credentials, Mechanism};
use client::{Client, Security};
use e2e::{free_port, BrokerProcess};
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DeleteTopicsRequest, FetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::procstat::CpuMeter;
use crate::{Args, Report, GB, MB};

const USER: &str = "kbench";
const RECORD_BYTES: usize = 1024;
const BATCH_RECORDS: usize = 256;

/// A CA and a certificate for 127.0.0.1, made with openssl in `dir`:
/// (keystore PEM: key and chain, CA PEM).
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let done = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("openssl (apt-get install openssl)")?;
        if !done.status.success() {
            bail!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kbench CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
    ])?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    run(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "broker.crt",
    ])?;
    let key = std::fs::read_to_string(dir.join("broker.key"))?;
    let chain = std::fs::read_to_string(dir.join("broker.crt"))?;
    std::fs::write(dir.join("keystore.pem"), format!("{key}{chain}"))?;
    Ok(())
}

fn tls(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Reads partition 0 of `topic` from offset 0 up to `end` over one
/// connection: (bytes of record batches, seconds).
async fn fetch_all(client: &mut Client, topic: &str, end: i64) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let (mut offset, mut bytes) = (0i64, 0u64);
    while offset < end {
        let response = client
            .call(
                FetchRequest::default()
                    .with_max_wait_ms(100)
                    .with_max_bytes(8 << 20)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(4 << 20)])]),
                12,
            )
            .await?;
        let partition = &response.responses[0].partitions[0];
        if partition.error_code != 0 {
            bail!("Fetch: error {}", partition.error_code);
        }
        let Some(records) = &partition.records else {
            continue;
        };
        bytes += records.len() as u64;
        // The next offset: after the last batch (base offset at 0, last
        // offset delta at 23 of each batch header).
        let mut at = 0usize;
        while at + 61 <= records.len() {
            let base = i64::from_be_bytes(records[at..at + 8].try_into()?);
            let length = i32::from_be_bytes(records[at + 8..at + 12].try_into()?) as usize;
            let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into()?);
            if at + 12 + length > records.len() {
                break;
            }
            offset = base + i64::from(delta) + 1;
            at += 12 + length;
        }
    }
    Ok((bytes, started.elapsed().as_secs_f64()))
}

pub(crate) fn security_phases(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    crate::phase("security");
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let sasl_ssl_port = free_port();
    let sasl_port = free_port();
    let listeners = format!(
        "listeners=PLAINTEXT://127.0.0.1:{{port}},SASL_SSL://127.0.0.1:{sasl_ssl_port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
    );
    let keystore = format!(
        "ssl.keystore.location={}",
        dir.path().join("keystore.pem").display()
    );
    let broker = BrokerProcess::start(&[
        &listeners,
        "ssl.keystore.type=PEM",
        &keystore,
        "ssl.enabled.protocols=TLSv1.3",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "num.partitions=1",
        "log.retention.bytes=1073741824",
        "log.segment.bytes=134217728",
    ]);
    let pid = broker.pid().context("broker pid")?;
    let plain_address = broker.bootstrap();
    let password = "kbench-password".to_string();
    let duration = Duration::from_secs(args.duration.min(20));
    let rounds = if args.quick { 1 } else { 3 };
    let ca = dir.path().join("ca.pem");
    let scram = Credentials::new(Mechanism::ScramSha512, USER.into(), password.clone());
    let secured = Security::tls(tls(&ca)?).with_sasl(scram.clone());

    runtime.block_on(async {
        let mut admin = Client::connect(&plain_address).await?;
        let salt = client::sasl::random_salt()?;
        let salted = client::sasl::salted_password(Mechanism::ScramSha512, &password, &salt, 4096)?;
        let altered = admin
            .call(
                AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_static_str(USER))
                        .with_mechanism(2)
                        .with_iterations(4096)
                        .with_salt(salt.into())
                        .with_salted_password(salted.into()),
                ]),
                0,
            )
            .await?;
        if altered.results.iter().any(|r| r.error_code != 0) {
            bail!("AlterUserScramCredentials failed");
        }
        anyhow::Ok(())
    })?;

    report.line("## Security: SASL_SSL (TLS 1.3, SCRAM-SHA-512) against PLAINTEXT");
    report.line("");
    report.line(format!(
        "kbench's protocol-level producer (acks=1, batches of {BATCH_RECORDS} × 1 KiB, five in flight) and fetcher on one connection each, rustls on both sides; {rounds} alternating rounds of {} s each.",
        duration.as_secs()
    ));
    report.line("");
    report.line("| round | listener | produce MB/s | broker CPU s/GB | kbench CPU s/GB | fetch MB/s | broker CPU s/GB | kbench CPU s/GB |");
    report.line("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut totals = [(0.0f64, 0.0f64, 0.0f64); 2];
    for round in 1..=rounds {
        for (index, (name, address, security)) in [
            ("PLAINTEXT", plain_address.clone(), Security::plaintext()),
            (
                "SASL_SSL",
                format!("127.0.0.1:{sasl_ssl_port}"),
                secured.clone(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let topic = format!("security-{round}-{name}");
            // Each phase starts with what the last one wrote back to disk.
            crate::procstat::wait_for_writeback(64 * crate::MIB, Duration::from_secs(60));
            runtime.block_on(crate::load::create_topic(&plain_address, &topic, 1, 1))?;
            let cpu = CpuMeter::start(pid);
            let produced = runtime.block_on(crate::txn::produce_over(
                &address,
                &security,
                &topic,
                1,
                false,
                BATCH_RECORDS,
                RECORD_BYTES,
                duration,
            ))?;
            let (broker_cpu, own_cpu) = cpu.read();
            let gb = produced.bytes as f64 / GB;
            let cpu = CpuMeter::start(pid);
            let (fetched, seconds) = runtime.block_on(async {
                let mut client = Client::connect_with(&address, "kbench-fetch", &security).await?;
                fetch_all(&mut client, &topic, produced.records as i64).await
            })?;
            let (fetch_broker_cpu, fetch_own_cpu) = cpu.read();
            let fetched_gb = fetched as f64 / GB;
            let produce_rate = produced.bytes as f64 / produced.seconds / MB;
            report.line(format!(
                "| {round} | {name} | {produce_rate:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
                broker_cpu / gb,
                own_cpu / gb,
                fetched as f64 / seconds / MB,
                fetch_broker_cpu / fetched_gb,
                fetch_own_cpu / fetched_gb,
            ));
            // Its disk back before the next phase.
            runtime.block_on(async {
                let mut admin = Client::connect(&plain_address).await?;
                admin
                    .call(
                        DeleteTopicsRequest::default()
                            .with_topic_names(vec![TopicName(StrBytes::from_string(topic.clone()))])
                            .with_timeout_ms(30_000),
                        4,
                    )
                    .await?;
                anyhow::Ok(())
            })?;
            totals[index].0 += produce_rate;
            totals[index].1 += broker_cpu / gb;
            totals[index].2 += fetched as f64 / seconds / MB;
        }
    }
    report.line("");
    report.line(format!(
        "SASL_SSL against PLAINTEXT, means over the rounds: produce {:.2}×, broker CPU per GB produced {:.2}×, fetch {:.2}×.",
        totals[1].0 / totals[0].0,
        totals[1].1 / totals[0].1,
        totals[1].2 / totals[0].2,
    ));
    report.line("");

    // SCRAM handshakes: connect, authenticate, drop, for a few seconds.
    let handshake_seconds = if args.quick { 2.0 } else { 10.0 };
    let sasl_address = format!("127.0.0.1:{sasl_port}");
    let scram_only = Security::plaintext().with_sasl(scram);
    let cpu = CpuMeter::start(pid);
    let (count, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed().as_secs_f64() < handshake_seconds {
            let client = Client::connect_with(&sasl_address, "kbench-scram", &scram_only).await?;
            drop(client);
            count += 1;
        }
        anyhow::Ok((count, started.elapsed().as_secs_f64()))
    })?;
    let (broker_cpu, own_cpu) = cpu.read();
    report.line("| SCRAM-SHA-512 handshakes, 4096 iterations, one at a time | per second | broker CPU ms each | kbench CPU ms each |");
    report.line("|---|---:|---:|---:|");
    report.line(format!(
        "| {count} in {elapsed:.1} s (new connection, ApiVersions, SaslHandshake, two SaslAuthenticate) | {:.0} | {:.2} | {:.2} |",
        count as f64 / elapsed,
        1000.0 * broker_cpu / count as f64,
        1000.0 * own_cpu / count as f64,
    ));
    report.line("");
    drop(broker);
    Ok(())
}
