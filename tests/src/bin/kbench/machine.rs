//! The machine's own limits, measured in the same run as the broker: what
//! one TCP stream moves over loopback, and what the disk takes sequentially.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

/// Bytes per second one TCP stream carries over 127.0.0.1 for `duration`
/// (1 MiB writes, 1 MiB reads, a thread at each end).
pub(crate) fn loopback_tcp(duration: Duration) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok(total),
                read => total += read as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(address)?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    while started.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let total = reader.join().expect("reader thread")?;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Sequential 1 MiB writes to a new file in `dir` for `duration` or up to
/// `bytes`, whichever comes first: buffered with one fsync at the end
/// (`sync_every` = None), or with fdatasync after every `sync_every` bytes.
/// The file is removed after.
pub(crate) struct DiskWrite {
    pub bytes_per_second: f64,
    /// CPU seconds this process spent per GB written (the kernel's copy into
    /// the page cache is counted here, as it is for the broker).
    pub cpu_seconds_per_gb: f64,
}

pub(crate) fn disk_write(
    dir: &Path,
    duration: Duration,
    bytes: u64,
    sync_every: Option<u64>,
) -> anyhow::Result<DiskWrite> {
    let cpu_before = crate::procstat::cpu_seconds("self");
    let path = dir.join("kbench-disk-probe");
    let mut file = File::create(&path)?;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    let mut written = 0u64;
    let mut since_sync = 0u64;
    while written < bytes && started.elapsed() < duration {
        file.write_all(&chunk)?;
        written += CHUNK as u64;
        since_sync += CHUNK as u64;
        if sync_every.is_some_and(|every| since_sync >= every) {
            file.sync_data()?;
            since_sync = 0;
        }
    }
    file.sync_all()?;
    let elapsed = started.elapsed();
    let cpu = crate::procstat::cpu_seconds("self") - cpu_before;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(DiskWrite {
        bytes_per_second: written as f64 / elapsed.as_secs_f64(),
        cpu_seconds_per_gb: cpu / (written as f64 / 1e9),
    })
}
