//! Secret volumes of pods that run as processes. There are no mount namespaces without
//! privileges, so the kubelet writes each Secret volume's keys as files into a directory of the
//! pod's own (mode 0700, removed when the pod's processes are gone), and a path under one of a
//! container's `volumeMounts` in its command, arguments or environment is rewritten to that
//! directory — what the container would see at its `mountPath`.
//!
//! As the kubelet does: `items` picks keys (each at its `path`; all keys at their names without
//! `items`), `mode` and `defaultMode` set the files' permissions (0644 by default), a `subPath`
//! mounts one entry of the volume, and a missing Secret (or key) that is not `optional` holds the
//! pod before it starts (`FailedMount`) until it exists.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Secret, SecretVolumeSource};

/// Kubernetes' `defaultMode` of a Secret volume's files.
const DEFAULT_MODE: i32 = 0o644;

/// A container's mounts: (its `mountPath`, the directory or file standing for it), longest
/// `mountPath` first so that a nested mount wins.
pub(crate) type Mounts = Vec<(String, PathBuf)>;

/// The Secret volumes a pod's containers mount, by volume name.
pub(crate) fn secret_volumes(pod: &Pod) -> BTreeMap<String, SecretVolumeSource> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.secret.clone().map(|s| (v.name.clone(), s)))
        .collect()
}

/// Writes each Secret volume of `pod` under `dir` (`dir/{volume}/{path}`), reading Secrets with
/// `get`; returns each container's mounts. `Err` says why the pod cannot start yet (a missing
/// Secret or key), as the kubelet's `FailedMount` event would.
pub(crate) fn mount(
    pod: &Pod,
    dir: &Path,
    get: impl Fn(&str) -> Option<Secret>,
) -> Result<Vec<Mounts>, String> {
    let volumes = secret_volumes(pod);
    for (name, source) in &volumes {
        let secret_name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        let data: BTreeMap<String, Vec<u8>> = match get(&secret_name) {
            Some(s) => {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            }
            None if optional => BTreeMap::new(),
            None => {
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : secret \"{secret_name}\" not found"
                ));
            }
        };
        let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let files: Vec<(String, String, i32)> = match &source.items {
            Some(items) => {
                let mut files = Vec::new();
                for item in items {
                    if !data.contains_key(&item.key) && !optional {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume \"{name}\" : references non-existent secret key: {}",
                            item.key
                        ));
                    }
                    files.push((
                        item.key.clone(),
                        item.path.clone(),
                        item.mode.unwrap_or(default_mode),
                    ));
                }
                files
            }
            None => data
                .keys()
                .map(|k| (k.clone(), k.clone(), default_mode))
                .collect(),
        };
        let root = dir.join(name);
        create_private_dir(&root)?;
        for (key, path, mode) in files {
            let Some(bytes) = data.get(&key) else {
                continue;
            };
            let relative = Path::new(&path);
            if path.is_empty()
                || !relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(format!(
                    "volume \"{name}\": item path {path:?} must be relative and must not contain '..'"
                ));
            }
            let file = root.join(relative);
            if let Some(parent) = file.parent() {
                create_private_dir(parent)?;
            }
            write_file(&file, bytes, mode)?;
        }
    }
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    Ok(containers
        .map(|c| {
            let mut mounts: Mounts = c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| volumes.contains_key(&m.name))
                .map(|m| {
                    let mut host = dir.join(&m.name);
                    if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                        host = host.join(sub);
                    }
                    (m.mount_path.trim_end_matches('/').to_owned(), host)
                })
                .filter(|(path, _)| !path.is_empty())
                .collect();
            mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
            mounts
        })
        .collect())
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the volume directory {}: {e}", dir.display()))
}

fn write_file(file: &Path, bytes: &[u8], mode: i32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(file, bytes)
        .and_then(|()| {
            std::fs::set_permissions(
                file,
                std::fs::Permissions::from_mode(mode.max(0).unsigned_abs() & 0o777),
            )
        })
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Whether `c` may continue or precede a path component (so `/etc/tls` is not found inside
/// `/etc/tlsx` or `/a/etc/tls`).
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// `text` with every path under one of `mounts`' `mountPath`s pointing into the directory that
/// stands for it: `--tls-ca-file=/etc/rask/tls/ca.pem` → `--tls-ca-file=/tmp/.../rask-tls/ca.pem`.
pub(crate) fn rewrite(text: &str, mounts: &Mounts) -> String {
    let mut out = text.to_owned();
    for (mount_path, host) in mounts {
        let host = host.display().to_string();
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(mount_path.as_str()) {
            let before = rest[..i].chars().next_back();
            let after_text = &rest[i + mount_path.len()..];
            let after = after_text.chars().next();
            let starts = before.is_none_or(|c| !is_name_char(c));
            let ends = after.is_none_or(|c| c == '/' || !is_name_char(c));
            result.push_str(&rest[..i]);
            if starts && ends {
                result.push_str(&host);
            } else {
                result.push_str(mount_path);
            }
            rest = after_text;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Container, KeyToPath, PodSpec, Volume, VolumeMount};

    fn pod(items: Option<Vec<KeyToPath>>, optional: Option<bool>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "tls".into(),
                        mount_path: "/etc/rask/tls/".into(),
                        ..VolumeMount::default()
                    }]),
                    ..Container::default()
                }],
                volumes: Some(vec![Volume {
                    name: "tls".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("c-tls".into()),
                        items,
                        optional,
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn secret() -> Secret {
        Secret {
            data: Some(BTreeMap::from([
                ("ca.pem".to_owned(), ByteString(b"CA".to_vec())),
                ("key.pem".to_owned(), ByteString(b"KEY".to_vec())),
            ])),
            ..Secret::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..KeyToPath::default()
        }
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kube-double-volumes-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_secret_volume_becomes_files_and_paths_under_its_mount_point_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp();
        let p = pod(
            Some(vec![
                item("ca.pem", "ca.pem", None),
                item("key.pem", "keys/key.pem", Some(0o600)),
            ]),
            None,
        );
        let mounts = mount(&p, &dir, |name| (name == "c-tls").then(secret)).unwrap();
        assert_eq!(
            mounts,
            vec![vec![("/etc/rask/tls".to_owned(), dir.join("tls"))]]
        );
        assert_eq!(std::fs::read(dir.join("tls/ca.pem")).unwrap(), b"CA");
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("tls/ca.pem"), 0o644, "Kubernetes' defaultMode");
        assert_eq!(mode("tls/keys/key.pem"), 0o600);
        assert_eq!(mode("tls"), 0o700);
        let host = dir.join("tls").display().to_string();
        assert_eq!(
            rewrite("--tls-ca-file=/etc/rask/tls/ca.pem", &mounts[0]),
            format!("--tls-ca-file={host}/ca.pem")
        );
        assert_eq!(rewrite("/etc/rask/tls", &mounts[0]), host);
        for untouched in [
            "/etc/rask/tlsx/ca.pem",
            "/x/etc/rask/tls/ca.pem",
            "tls://a:1",
        ] {
            assert_eq!(rewrite(untouched, &mounts[0]), untouched);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_items_every_key_is_a_file() {
        let dir = temp();
        mount(&pod(None, None), &dir, |_| Some(secret())).unwrap();
        assert_eq!(std::fs::read(dir.join("tls/key.pem")).unwrap(), b"KEY");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_secret_or_key_holds_the_pod_unless_optional() {
        let dir = temp();
        let err = mount(&pod(None, None), &dir, |_| None).unwrap_err();
        assert!(err.contains("secret \"c-tls\" not found"), "{err}");
        assert!(mount(&pod(None, Some(true)), &dir, |_| None).is_ok());
        let missing_key = pod(Some(vec![item("nope.pem", "nope.pem", None)]), None);
        let err = mount(&missing_key, &dir, |_| Some(secret())).unwrap_err();
        assert!(err.contains("non-existent secret key: nope.pem"), "{err}");
        let escaping = pod(Some(vec![item("ca.pem", "../ca.pem", None)]), None);
        let err = mount(&escaping, &dir, |_| Some(secret())).unwrap_err();
        assert!(err.contains("must not contain '..'"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
