//! Reading the server's own Prometheus text back into numbers, for the
//! console's overview (only while someone watches; the hot path keeps
//! counting exactly as before).

use std::collections::BTreeMap;

/// Series → value, keyed as written (`name{label="v"}`).
#[derive(Debug, Default, Clone)]
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                series.insert(key.to_owned(), v);
            }
        }
        Scrape(series)
    }

    /// A series without labels (0 when absent).
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Every series of `name` with one label `label`: label value → value.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{name}{{{label}=\"");
        self.0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let rest = &k[prefix.len()..];
                let value = rest.strip_suffix("\"}")?;
                Some((value.to_owned(), *v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_labelled_series() {
        let text = "# HELP x\n# TYPE touchline_feed_bytes counter\ntouchline_feed_bytes_total 42\n\
                    touchline_feed_messages_total{kind=\"alive\"} 3\ntouchline_feed_messages_total{kind=\"odds_change\"} 7\n\
                    touchline_feed_messages_totalx{kind=\"no\"} 1\ntouchline_store_commit_seconds_sum 0.5\n# EOF\n";
        let s = Scrape::parse(text);
        assert_eq!(s.get("touchline_feed_bytes_total"), 42.0);
        assert_eq!(s.get("missing"), 0.0);
        let kinds = s.by_label("touchline_feed_messages_total", "kind");
        assert_eq!(kinds.len(), 2);
        assert_eq!(kinds["odds_change"], 7.0);
        assert_eq!(s.get("touchline_store_commit_seconds_sum"), 0.5);
    }
}
