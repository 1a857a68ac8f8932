//! Certificate issuing with rcgen: the witness CA, the witness's server certificate, node
//! certificates (`witness://<cluster>/<room>/<node>`) and operator certificates
//! (`witness-admin://<name>`), so an operator needs no openssl recipe. Also the demo bootstrap
//! that `witness serve` runs on a fresh machine.
//!
//! Files are `<name>.pem` and `<name>-key.pem`; key files are written with mode 0600 and
//! existing files are never overwritten unless asked (a CA overwritten by mistake would lock
//! every node out).
use proto::ids::Identity;
use proto::{ClusterId, NodeId, RoomId};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot generate {what}: {source}; this is a bug or an unsupported parameter")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}; check the directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace it (every certificate it signed or that uses it changes)")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {source}; the CA directory must hold ca.pem and ca-key.pem (create them with `witness certs ca --out DIR`)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not usable: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Name(String),
}

/// How long issued certificates are valid, in days.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub days: u32,
}

impl Validity {
    pub const CA_DEFAULT_DAYS: u32 = 3650;
    pub const LEAF_DEFAULT_DAYS: u32 = 825;
}

/// A written certificate and key.
#[derive(Clone, Debug)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded CA able to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

fn params(cn: &str, days: u32, backdate: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "two-room witness");
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks slightly behind ours.
    p.not_before = if backdate {
        now - Duration::minutes(5)
    } else {
        now
    };
    p.not_after = now + Duration::days(i64::from(days));
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    p
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_string(),
        source,
    }
}

/// Writes a file; `secret` makes it mode 0600 from the start (never readable by others).
pub fn write_file(
    path: &Path,
    contents: &[u8],
    secret: bool,
    force: bool,
) -> Result<(), CertError> {
    if path.exists() && !force {
        return Err(CertError::Exists {
            path: path.to_path_buf(),
        });
    }
    let werr = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
    }
    // Write to a temporary file and rename, so a reader (the reloader) never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(werr)?;
    f.write_all(contents).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(())
}

fn write_pair(
    out: &Path,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
    force: bool,
) -> Result<Written, CertError> {
    let cert = out.join(format!("{name}.pem"));
    let key = out.join(format!("{name}-key.pem"));
    if !force {
        for p in [&cert, &key] {
            if p.exists() {
                return Err(CertError::Exists { path: p.clone() });
            }
        }
    }
    write_file(&key, key_pem.as_bytes(), true, force)?;
    write_file(&cert, cert_pem.as_bytes(), false, force)?;
    Ok(Written { cert, key })
}

/// Creates a new CA in `out` (`ca.pem`, `ca-key.pem`).
pub fn create_ca(out: &Path, cn: &str, v: Validity, force: bool) -> Result<Written, CertError> {
    let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
    let mut p = params(cn, v.days, true);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).map_err(gen_err("the CA certificate"))?;
    write_pair(out, "ca", &cert.pem(), &key.serialize_pem(), force)
}

impl Ca {
    /// Loads `ca.pem` and `ca-key.pem` from a directory.
    pub fn load(dir: &Path) -> Result<Ca, CertError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CertError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Invalid {
            path: key_path.clone(),
            reason: format!("not a private key in PEM: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CertError::Invalid {
            path: cert_path.clone(),
            reason: format!("not a CA certificate in PEM: {e}"),
        })?;
        Ok(Ca { issuer })
    }

    fn issue(
        &self,
        out: &Path,
        file_name: &str,
        p: CertificateParams,
        force: bool,
    ) -> Result<Written, CertError> {
        let key = KeyPair::generate().map_err(gen_err(file_name))?;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(file_name))?;
        write_pair(out, file_name, &cert.pem(), &key.serialize_pem(), force)
    }

    /// The witness's server certificate (`server.pem`): DNS names and IPs in `names`, plus
    /// localhost and 127.0.0.1.
    pub fn issue_server(
        &self,
        out: &Path,
        names: &[String],
        v: Validity,
        force: bool,
    ) -> Result<Written, CertError> {
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
        for n in names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        let first = names.first().cloned().unwrap_or_else(|| "localhost".into());
        let mut p = params(&first, v.days, true);
        p.subject_alt_names = sans(&all)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(out, "server", p, force)
    }

    /// A node's certificate: identity `witness://<cluster>/<room>/<node>`; usable as client
    /// (toward the witness) and as server (the agent's heartbeat endpoint), with optional extra
    /// DNS names / IPs for the latter. File name `<node>.pem` unless `file_name` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_node(
        &self,
        out: &Path,
        cluster: &str,
        room: &str,
        node: &str,
        extra_names: &[String],
        file_name: Option<&str>,
        v: Validity,
        force: bool,
    ) -> Result<Written, CertError> {
        for (kind, s) in [("cluster", cluster), ("room", room), ("node", node)] {
            proto::ids::check_name(kind, s).map_err(CertError::Name)?;
        }
        let id = Identity::Node {
            cluster: ClusterId::new(cluster),
            room: RoomId::new(room),
            node: NodeId::new(node),
        };
        let mut p = params(&id.to_uri(), v.days, true);
        let mut s = vec![uri_san(&id.to_uri())?];
        s.extend(sans(extra_names)?);
        p.subject_alt_names = s;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        self.issue(out, file_name.unwrap_or(node), p, force)
    }

    /// An operator's certificate: identity `witness-admin://<name>`; file `<name>.pem`.
    pub fn issue_admin(
        &self,
        out: &Path,
        name: &str,
        v: Validity,
        force: bool,
    ) -> Result<Written, CertError> {
        proto::ids::check_name("admin", name).map_err(CertError::Name)?;
        let id = Identity::Admin {
            name: name.to_string(),
        };
        let mut p = params(&id.to_uri(), v.days, true);
        p.subject_alt_names = vec![uri_san(&id.to_uri())?];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(out, name, p, force)
    }

    /// A certificate with arbitrary validity bounds, for tests (e.g. an expired one).
    pub fn issue_node_with_dates(
        &self,
        out: &Path,
        id: &Identity,
        file_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Written, CertError> {
        let mut p = params(&id.to_uri(), 1, false);
        p.not_before = not_before;
        p.not_after = not_after;
        p.subject_alt_names = vec![uri_san(&id.to_uri())?];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(out, file_name, p, true)
    }
}

fn uri_san(uri: &str) -> Result<SanType, CertError> {
    Ok(SanType::URI(uri.try_into().map_err(|e| {
        CertError::Name(format!("{uri:?} cannot be a certificate URI: {e}"))
    })?))
}

fn sans(names: &[String]) -> Result<Vec<SanType>, CertError> {
    names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.as_str().try_into().map_err(|e| {
                CertError::Name(format!(
                    "{n:?} is neither an IP address nor a DNS name: {e}"
                ))
            })?)),
        })
        .collect()
}

/// The demo cluster generated on a fresh machine.
pub const DEMO_CLUSTER: &str = "demo";
/// The demo nodes: (room, node).
pub const DEMO_NODES: [(&str, &str); 4] = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")];
/// The demo operator.
pub const DEMO_ADMIN: &str = "admin";

/// What the demo bootstrap did.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// Files created (empty when everything was already there).
    pub created: Vec<PathBuf>,
}

/// `witness serve` on a fresh machine: makes sure `<dir>` holds a CA, a server certificate, the
/// demo cluster's node certificates and an admin certificate, creating only what is missing.
/// A new CA replaces everything it would have signed.
pub fn bootstrap_demo(dir: &Path, server_names: &[String]) -> Result<Bootstrap, CertError> {
    let mut b = Bootstrap::default();
    let v = Validity {
        days: Validity::LEAF_DEFAULT_DAYS,
    };
    let new_ca = !dir.join("ca.pem").exists() || !dir.join("ca-key.pem").exists();
    if new_ca {
        let w = create_ca(
            dir,
            "witness demo CA",
            Validity {
                days: Validity::CA_DEFAULT_DAYS,
            },
            true,
        )?;
        b.created.extend([w.cert, w.key]);
    }
    let ca = Ca::load(dir)?;
    let missing = |name: &str| {
        new_ca
            || !dir.join(format!("{name}.pem")).exists()
            || !dir.join(format!("{name}-key.pem")).exists()
    };
    if missing("server") {
        let w = ca.issue_server(dir, server_names, v, true)?;
        b.created.extend([w.cert, w.key]);
    }
    for (room, node) in DEMO_NODES {
        if missing(node) {
            let w = ca.issue_node(dir, DEMO_CLUSTER, room, node, &[], None, v, true)?;
            b.created.extend([w.cert, w.key]);
        }
    }
    if missing(DEMO_ADMIN) {
        let w = ca.issue_admin(dir, DEMO_ADMIN, v, true)?;
        b.created.extend([w.cert, w.key]);
    }
    Ok(b)
}

/// A certificate expiring within this many days is warned about (as the alerts do).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One certificate of a PEM file, as `witness certs check` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    /// The URI names (`witness://...`, `witness-admin://...`).
    pub identities: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Whole days until `not_after` from `now` (negative: expired).
    pub days_left: i64,
}

impl CertInfo {
    /// A warning when it expires within [`EXPIRY_WARNING_DAYS`] (or has expired).
    pub fn warning(&self) -> Option<String> {
        let who = self
            .identities
            .first()
            .cloned()
            .unwrap_or_else(|| self.subject.clone());
        if self.days_left < 0 {
            Some(format!("{who} EXPIRED {} days ago", -self.days_left))
        } else if self.days_left < EXPIRY_WARNING_DAYS {
            Some(format!(
                "{who} expires in {} days (less than {EXPIRY_WARNING_DAYS}): issue a new one",
                self.days_left
            ))
        } else {
            None
        }
    }
}

/// Every certificate in the PEM file at `path`, with its days left at `now` (Unix seconds).
pub fn inspect(path: &Path, now: i64) -> Result<Vec<CertInfo>, CertError> {
    let invalid = |reason: String| CertError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path)
        .map_err(|e| invalid(format!("cannot read it: {e}; give the path of a PEM file")))?;
    let mut out = Vec::new();
    for der in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = der.map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        let (_, c) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
        let identities = match c.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let not_after = c.validity().not_after.timestamp();
        out.push(CertInfo {
            subject: c.subject().to_string(),
            identities,
            not_after,
            days_left: (not_after - now).div_euclid(86_400),
        });
    }
    if out.is_empty() {
        return Err(invalid("no certificate in it".into()));
    }
    Ok(out)
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A warning for the operator when the first certificate of `path` expires within 30 days
/// (`witness admin` prints it on every use: no process holds an admin certificate, so no
/// metric can watch it).
pub fn expiry_warning(path: &Path) -> Option<String> {
    let info = inspect(path, unix_now()).ok()?;
    info.first()?
        .warning()
        .map(|w| format!("{}: {w}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_certificate_near_its_expiry_is_warned_about() {
        let d = tempfile::tempdir().expect("tempdir");
        create_ca(d.path(), "t", Validity { days: 3650 }, false).expect("ca");
        let ca = Ca::load(d.path()).expect("load");
        let short = ca
            .issue_admin(d.path(), "ops", Validity { days: 20 }, false)
            .expect("admin");
        let w = expiry_warning(&short.cert).expect("a warning within 30 days");
        assert!(
            w.contains("witness-admin://ops") && w.contains("expires in"),
            "{w}"
        );
        let long = ca
            .issue_admin(d.path(), "ops2", Validity { days: 400 }, false)
            .expect("admin");
        assert_eq!(expiry_warning(&long.cert), None);
        let info = inspect(&long.cert, unix_now() + 401 * 86_400).expect("inspect");
        assert!(info[0].warning().is_some_and(|w| w.contains("EXPIRED")));
        let ca_info = inspect(&d.path().join("ca.pem"), unix_now()).expect("ca");
        assert!(ca_info[0].days_left >= 3648 && ca_info[0].identities.is_empty());
    }

    #[test]
    fn issued_node_certificate_carries_the_identity_uri_and_keys_are_private() {
        let d = tempfile::tempdir().expect("tempdir");
        create_ca(d.path(), "t", Validity { days: 10 }, false).expect("ca");
        let ca = Ca::load(d.path()).expect("load");
        let w = ca
            .issue_node(
                d.path(),
                "c1",
                "a",
                "n1",
                &[],
                None,
                Validity { days: 10 },
                false,
            )
            .expect("node");
        let pem = std::fs::read(&w.cert).expect("read");
        let ids = crate::tls::identities_in_pem(&pem).expect("parse");
        assert_eq!(ids, vec!["witness://c1/a/n1".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&w.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        // Never overwritten by accident.
        assert!(matches!(
            ca.issue_node(
                d.path(),
                "c1",
                "a",
                "n1",
                &[],
                None,
                Validity { days: 10 },
                false
            ),
            Err(CertError::Exists { .. })
        ));
    }
}
