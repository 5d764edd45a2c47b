//! The kernel's own memory for connections, machine-wide: the pages charged to TCP socket
//! buffers (`/proc/net/sockstat`, `TCP: ... mem N`, IPv4 and IPv6 together), which an idle
//! connection's empty buffers hardly touch, plus the kernel's unreclaimable slab
//! (`/proc/meminfo`, `SUnreclaim`), where each socket's own structures live (the TCP socket,
//! its inode, file and epoll entry). Sampled before the subscribers connect and once they all
//! have, its growth per connection sits beside the processes' RSS per connection, as published
//! per-connection figures count it. On one machine both ends of every connection are in it,
//! and so is whatever else the machine did meanwhile: a figure for many connections.

/// Bytes the kernel holds for sockets now (TCP buffers and unreclaimable slab), or `None`
/// where `/proc` does not say.
pub fn socket_bytes() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let buffers = tcp_pages(&sockstat)? * rustix::param::page_size() as u64;
    Some(buffers + meminfo_kb(&meminfo, "SUnreclaim:")? * 1024)
}

/// A `/proc/meminfo` field, kB.
fn meminfo_kb(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `mem` field of the `TCP:` line, in pages.
fn tcp_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TCP line's `mem` is read, not UDP's or another field's.
    #[test]
    fn reads_the_tcp_pages() {
        let text =
            "sockets: used 11\nTCP: inuse 3 orphan 0 tw 173 alloc 5 mem 12\nUDP: inuse 0 mem 7\n";
        assert_eq!(tcp_pages(text), Some(12));
        assert_eq!(tcp_pages("UDP: inuse 0 mem 7\n"), None);
        assert_eq!(tcp_pages("TCP: inuse 3 mem x\n"), None);
    }

    /// A meminfo field by its exact name.
    #[test]
    fn reads_meminfo() {
        let text = "Slab:             200 kB\nSReclaimable:      50 kB\nSUnreclaim:       150 kB\n";
        assert_eq!(meminfo_kb(text, "SUnreclaim:"), Some(150));
        assert_eq!(meminfo_kb(text, "Missing:"), None);
    }
}
