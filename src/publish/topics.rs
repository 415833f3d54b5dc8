//! The topic names of one node: `<prefix>/<node>/status`, `…/health`, `…/command`, `…/<camera>/event`
//! and `…/<camera>/state`.

/// The topic names of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    prefix: String,
    node: String,
}

impl Topics {
    pub fn new(prefix: &str, node: &str) -> Topics {
        Topics { prefix: prefix.trim_end_matches('/').to_string(), node: node.to_string() }
    }
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.node)
    }
    pub fn health(&self) -> String {
        format!("{}/{}/health", self.prefix, self.node)
    }
    pub fn command(&self) -> String {
        format!("{}/{}/command", self.prefix, self.node)
    }
    pub fn event(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/event", self.prefix, self.node)
    }
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/state", self.prefix, self.node)
    }
    /// A region's retained JPEG (`camera` is `<camera>/<region>`).
    pub fn snapshot(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/snapshot", self.prefix, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_layout() {
        let t = Topics::new("camclassd/", "pi4");
        assert_eq!(t.status(), "camclassd/pi4/status");
        assert_eq!(t.health(), "camclassd/pi4/health");
        assert_eq!(t.command(), "camclassd/pi4/command");
        assert_eq!(t.event("porch"), "camclassd/pi4/porch/event");
        assert_eq!(t.state("porch"), "camclassd/pi4/porch/state");
    }
}
