//! Java properties files, as Kafka's tools and brokers read them (a
//! broker's server.properties, a tool's `--command-config`).

use std::collections::BTreeMap;

/// Parses Java properties: `key=value`, `key: value` or `key value`;
/// `#` and `!` comments; a trailing backslash continues the line.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut properties = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let split = entry.find(['=', ':', ' ', '\t']).unwrap_or(entry.len());
        let key = entry[..split].trim();
        let value = entry[split..].trim_start_matches([' ', '\t']);
        let value = value.strip_prefix(['=', ':']).unwrap_or(value).trim();
        properties.insert(key.to_string(), value.to_string());
    }
    properties
}
