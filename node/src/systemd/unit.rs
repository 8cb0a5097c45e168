//! The unit `herd startup` installs: `deploy/herd.service`, the one shipped and documented,
//! with this host's herd binary, HERD_HOME and (optionally) the user to run as.

use std::path::Path;

/// The shipped unit, compiled in so the binary installs exactly what the repository tests.
pub const TEMPLATE: &str = include_str!("../../../deploy/herd.service");
/// Where `herd startup` writes the unit.
pub const UNIT_PATH: &str = "/etc/systemd/system/herd.service";
/// The unit's name for `systemctl`.
pub const UNIT_NAME: &str = "herd";

const TEMPLATE_BIN: &str = "/usr/local/bin/herd";
const TEMPLATE_HOME: &str = "Environment=HERD_HOME=/var/lib/herd";

/// The unit for `herd` at `exe`, with home `home`, run as `user` (root when `None`).
pub fn render(exe: &Path, home: &Path, user: Option<&str>) -> Result<String, String> {
    let exe = unit_path(exe, "the herd binary")?;
    let home = unit_path(home, "HERD_HOME")?;
    let mut env = format!("Environment=HERD_HOME={home}");
    if let Some(user) = user {
        if user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "`{}` is not a user name systemd accepts (letters, digits, `.`, `_`, `-`)",
                user.escape_debug()
            ));
        }
        // A daemon that is not root runs every app as that user (`user` keys are refused).
        env.push_str(&format!("\nUser={user}"));
    }
    Ok(TEMPLATE
        .replace(TEMPLATE_HOME, &env)
        .replace(TEMPLATE_BIN, &exe))
}

/// A path as a unit file can carry it unquoted: absolute, no whitespace, quotes, backslash or
/// control characters; `%` (a systemd specifier) doubled.
fn unit_path(path: &Path, what: &str) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{what} path {} is not UTF-8", path.display()))?;
    if !path.is_absolute()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\;".contains(c))
    {
        return Err(format!(
            "{what} path `{}` cannot go into a unit file unquoted (absolute, without spaces, quotes, `\\` or `;`); move it, or edit the unit from `herd startup --print`",
            text.escape_debug()
        ));
    }
    Ok(text.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_holds_what_render_replaces() {
        assert!(TEMPLATE.contains(TEMPLATE_BIN));
        assert_eq!(TEMPLATE.matches(TEMPLATE_HOME).count(), 1);
    }

    #[test]
    fn render_puts_this_hosts_binary_home_and_user() {
        let unit = render(
            Path::new("/opt/herd/bin/herd"),
            Path::new("/srv/herd"),
            Some("deploy"),
        )
        .unwrap();
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("ExecStart=/opt/herd/bin/herd up --foreground\n"));
        assert!(unit.contains("ExecStop=/opt/herd/bin/herd down\n"));
        assert!(unit.contains("Environment=HERD_HOME=/srv/herd\nUser=deploy\n"));
        assert!(!unit.contains(TEMPLATE_BIN));
        let root = render(Path::new("/usr/bin/herd"), Path::new("/root/.herd"), None).unwrap();
        assert!(!root.lines().any(|l| l.starts_with("User=")));
    }

    #[test]
    fn render_refuses_what_a_unit_cannot_carry_and_escapes_specifiers() {
        let exe = Path::new("/usr/bin/herd");
        assert!(render(exe, Path::new("/a b"), None).is_err());
        assert!(render(exe, Path::new("relative"), None).is_err());
        assert!(render(exe, Path::new("/h"), Some("a b")).is_err());
        assert!(render(exe, Path::new("/h"), Some("")).is_err());
        let unit = render(exe, Path::new("/h/100%"), None).unwrap();
        assert!(unit.contains("HERD_HOME=/h/100%%\n"));
    }
}
