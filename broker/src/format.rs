//! `kbroker format --add-scram ...`: the first SCRAM credentials of a
//! cluster, written before any broker serves SASL, as Kafka's
//! `kafka-storage.sh format --add-scram` writes them — into etcd when
//! `etcd.endpoints` is set, else into the metadata file of the data
//! directory (with no broker running on it).

use anyhow::{bail, Context};
use coordinator::{MetadataStore, ScramChange, StandaloneStore};

use crate::config::{BrokerConfig, Mechanism};
use crate::sasl::scram::{Hashes, ITERATIONS_MAX, ITERATIONS_MIN};

/// How long `format` waits for etcd to answer.
const ETCD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One `--add-scram` argument, Kafka's form:
/// `SCRAM-SHA-256=[name=alice,password=alice-secret]`, optionally with
/// `iterations=N` (default 4096). Errors never quote the password.
pub fn parse_add_scram(argument: &str) -> anyhow::Result<ScramChange> {
    let (mechanism, rest) = argument
        .split_once('=')
        .context("--add-scram takes MECHANISM=[name=...,password=...]")?;
    let Some(mechanism) = Mechanism::from_name(mechanism).filter(|m| Hashes::of(*m).is_some())
    else {
        bail!("--add-scram: {mechanism} is not SCRAM-SHA-256 or SCRAM-SHA-512");
    };
    let fields = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .context("--add-scram: the user's fields go in [...]")?;
    let (mut name, mut password, mut iterations) = (None, None, ITERATIONS_MIN);
    for field in fields.split(',') {
        match field.split_once('=') {
            Some(("name", value)) => name = Some(value.trim_matches('"').to_string()),
            Some(("password", value)) => password = Some(value.trim_matches('"').to_string()),
            Some(("iterations", value)) => {
                iterations = value
                    .parse()
                    .ok()
                    .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
                    .with_context(|| {
                        format!(
                            "--add-scram: iterations must be {ITERATIONS_MIN}..{ITERATIONS_MAX}"
                        )
                    })?;
            }
            _ => bail!("--add-scram: fields are name=, password= and iterations="),
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .context("--add-scram: no name=")?;
    let password = password.context("--add-scram: no password=")?;
    let hashes = Hashes::of(mechanism).expect("a SCRAM mechanism");
    Ok(ScramChange {
        user: name,
        mechanism: mechanism.name().to_string(),
        credential: Some(hashes.credential_for_password(&password, iterations)),
    })
}

/// Writes the credentials where `config`'s brokers will find them.
pub async fn add_scram(config: &BrokerConfig, changes: Vec<ScramChange>) -> anyhow::Result<()> {
    let users: Vec<String> = changes
        .iter()
        .map(|c| format!("{} ({})", c.user, c.mechanism))
        .collect();
    match &config.cluster {
        Some(cluster) => {
            // etcd may still be starting (an init container next to it):
            // try for a minute.
            let deadline = std::time::Instant::now() + ETCD_WAIT;
            loop {
                match coordinator::etcd::bootstrap_scram_credentials(
                    &cluster.etcd_endpoints,
                    &cluster.etcd_prefix,
                    changes.clone(),
                )
                .await
                {
                    Ok(()) => break,
                    Err(error) if std::time::Instant::now() < deadline => {
                        eprintln!("etcd not reachable yet ({error}); trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(error) => {
                        return Err(error).context("writing SCRAM credentials to etcd");
                    }
                }
            }
            println!(
                "SCRAM credentials written to etcd ({}): {}",
                cluster.etcd_prefix,
                users.join(", ")
            );
        }
        None => {
            std::fs::create_dir_all(&config.log_dir)
                .with_context(|| format!("creating {}", config.log_dir.display()))?;
            let store = StandaloneStore::open(&config.log_dir, config.registration())
                .context("opening the metadata file")?;
            store.alter_scram_credentials(changes).await?;
            println!(
                "SCRAM credentials written to {}: {}",
                config.log_dir.display(),
                users.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_scram_arguments_parse_as_kafka_writes_them() {
        let change =
            parse_add_scram("SCRAM-SHA-512=[name=alice,password=alice-secret,iterations=8192]")
                .unwrap();
        assert_eq!(change.user, "alice");
        assert_eq!(change.mechanism, "SCRAM-SHA-512");
        assert_eq!(change.credential.unwrap().iterations, 8192);
        for bad in [
            "SCRAM-SHA-1=[name=a,password=b]",
            "PLAIN=[name=a,password=b]",
            "SCRAM-SHA-256=name=a,password=b",
            "SCRAM-SHA-256=[password=hunter2]",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[name=a,password=hunter2,iterations=10]",
            "SCRAM-SHA-256=[name=a,pass=hunter2]",
        ] {
            let error = format!("{:#}", parse_add_scram(bad).unwrap_err());
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
