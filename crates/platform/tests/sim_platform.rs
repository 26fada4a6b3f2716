//! The simulated TEE backend: refusal on real TEEs, measurement, dev key, evidence, sealing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use veil_attest::sim::SIM_MEASUREMENT;
use veil_attest::{AttestError, ExpectedReportData, Policy, SimVerifier, TeeKind, keys_hash, report_data};
use veil_platform::sim::{DEV_KEY_FILE, SimConfig, SimPlatform, measure};
use veil_platform::{Platform, PlatformConfig, PlatformError, PlatformKind, RawEvidence};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("exe"), b"pretend executable, version 1").unwrap();
        Self { dir }
    }

    fn config(&self) -> SimConfig {
        SimConfig {
            data_dir: self.dir.path().join("data"),
            config: b"listen = 127.0.0.1:0".to_vec(),
            probe_root: self.dir.path().join("root"),
            executable: Some(self.dir.path().join("exe")),
        }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

#[test]
fn refuses_to_start_where_a_real_tee_interface_exists() {
    for (rel, is_dir) in [
        ("sys/kernel/config/tsm/report", true),
        ("dev/tdx_guest", false),
        ("dev/sev-guest", false),
    ] {
        let env = Env::new();
        let path = env.path("root").join(rel);
        if is_dir {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        }
        match SimPlatform::start(env.config()) {
            Err(PlatformError::RealTeePresent(found)) => assert_eq!(found, path),
            other => panic!("{rel}: expected a refusal, got {other:?}"),
        }
        assert!(
            !env.path("data").join(DEV_KEY_FILE).exists(),
            "no key is created when refusing"
        );
    }
}

#[test]
fn evidence_verifies_as_simulated_and_binds_report_data() {
    let env = Env::new();
    let platform = SimPlatform::start(env.config()).unwrap();
    assert_eq!(platform.kind(), PlatformKind::Sim);
    let nonce = b"verifier nonce";
    let bound = keys_hash(&[b"enclave hpke key"]);
    let rd = report_data(nonce, &bound);
    let RawEvidence::Simulated(bytes) = platform.evidence(&rd).unwrap() else {
        panic!("not simulated")
    };

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = SimVerifier.verify(&bytes, now).unwrap();
    assert!(claims.simulated);
    assert_eq!(claims.tee, TeeKind::Simulated);
    assert_eq!(claims.report_data.0, rd);
    assert_eq!(claims.measurements, platform.measurement().unwrap());
    assert_eq!(claims.sim_key.as_ref().unwrap().0, platform.dev_public_key());

    let expected = ExpectedReportData::bound(nonce, &bound);
    assert_eq!(
        Policy::default().appraise(&claims, &expected, now),
        Err(AttestError::SimulatedNotAllowed)
    );
    Policy::development().appraise(&claims, &expected, now).unwrap();
}

#[test]
fn measurement_covers_executable_and_configuration() {
    let env = Env::new();
    let exe = env.path("exe");
    let m1 = measure(&exe, b"config A").unwrap();
    assert_eq!(m1, measure(&exe, b"config A").unwrap(), "deterministic");
    assert_ne!(
        m1,
        measure(&exe, b"config B").unwrap(),
        "configuration is measured"
    );
    std::fs::write(&exe, b"pretend executable, version 2").unwrap();
    assert_ne!(m1, measure(&exe, b"config A").unwrap(), "code is measured");
    // Pinned: SHA-256("veil/v1/sim-measurement" | SHA-256(exe) | config), parts length-prefixed.
    std::fs::write(&exe, b"").unwrap();
    assert_eq!(
        hex::encode(measure(&exe, b"").unwrap()),
        "4f71e0d33ef896429ae08f3da8afa7ad762353bdf30aadf44478062c160ed582"
    );

    let platform = SimPlatform::start(env.config()).unwrap();
    let m = platform.measurement().unwrap();
    assert_eq!(m[SIM_MEASUREMENT].0, measure(&exe, &env.config().config).unwrap());
    assert!(matches!(
        measure(Path::new("/nonexistent/veil"), b""),
        Err(PlatformError::Io { .. })
    ));
}

#[test]
fn dev_key_is_created_private_and_reused() {
    let env = Env::new();
    let first = SimPlatform::start(env.config()).unwrap();
    let key_path = env.path("data").join(DEV_KEY_FILE);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&key_path).unwrap().len(), 32);
    let second = SimPlatform::start(env.config()).unwrap();
    assert_eq!(first.dev_public_key(), second.dev_public_key());

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        SimPlatform::start(env.config()),
        Err(PlatformError::DevKey { .. })
    ));
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_path, [1u8; 31]).unwrap();
    let err = SimPlatform::start(env.config()).unwrap_err();
    assert!(err.to_string().contains("31 bytes, expected 32"), "{err}");
}

#[test]
fn sealing_round_trips_only_for_the_same_key() {
    let env = Env::new();
    let platform = SimPlatform::start(env.config()).unwrap();
    let sealed = platform.seal(b"network seed").unwrap();
    assert!(!sealed.windows(12).any(|w| w == b"network seed"));
    assert_eq!(platform.unseal(&sealed).unwrap().as_slice(), b"network seed");
    // Same data directory (same dev key) after a restart: still opens.
    let restarted = SimPlatform::start(env.config()).unwrap();
    assert_eq!(restarted.unseal(&sealed).unwrap().as_slice(), b"network seed");

    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(
        platform.unseal(&tampered),
        Err(PlatformError::Crypto(_))
    ));
    let other = Env::new();
    let other = SimPlatform::start(other.config()).unwrap();
    assert!(other.unseal(&sealed).is_err(), "another dev key cannot unseal");
}

#[test]
fn open_selects_the_backend_by_configuration() {
    let env = Env::new();
    let platform = veil_platform::open(PlatformConfig::Sim(env.config())).unwrap();
    assert_eq!(platform.kind(), PlatformKind::Sim);
    assert_eq!("sim".parse::<PlatformKind>().unwrap(), PlatformKind::Sim);
    assert_eq!("tdx".parse::<PlatformKind>().unwrap(), PlatformKind::Tdx);
    assert!("sgx".parse::<PlatformKind>().is_err());
}
