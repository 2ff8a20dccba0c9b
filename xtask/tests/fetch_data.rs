//! `cargo xtask fetch-data` against a local HTTP server (tests never touch the network):
//! the shipped MNIST files served as a mirror are fetched, gunzipped and verified; a
//! corrupted byte is refused with `sha256 mismatch` and nothing is written; an unreachable
//! source names the URL and the hand-fetch instruction; a present dataset is only verified;
//! archive members are stripped, filtered and checked as a folder digest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::write::GzEncoder;
use pixreg_datasets::DatasetName;
use xtask::catalogue::{DatasetInfo, DownloadSpec, Unpack};
use xtask::fetch::{fetch_dataset, tree_sha256, FetchOptions, Fetched};
use xtask::{resolve_data_dir, workspace_root};

const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Serves the files of `dir` over HTTP/1.1 on 127.0.0.1 (404 for others) until the test ends.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let file = dir.join(path.trim_start_matches('/'));
                let response = match std::fs::read(&file) {
                    Ok(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    Err(_) => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                stream.write_all(&response).ok();
            });
        }
    });
    format!("http://{addr}/")
}

fn shared() -> PathBuf {
    resolve_data_dir(&workspace_root(), None)
        .expect("the shipped datasets (../shared/datasets or $PIXREG_DATA_DIR) are required")
}

fn fetch_data(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("fetch-data")
        .args(args)
        .env("PIXREG_CACHE_DIR", cache)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".fetch-"))
        .collect()
}

#[test]
fn a_mirror_of_the_shipped_files_is_fetched_gunzipped_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = serve(shared().join("mnist"));
    let dir = tmp.path().join("data");
    let out = fetch_data(
        &["mnist", "--dir", dir.to_str().unwrap(), "--from", &mirror],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("mnist: downloaded to")
            && text(&out.stdout).contains("4 checksum(s) match"),
        "{}",
        text(&out.stdout)
    );
    for file in IDX_FILES {
        let raw = dir.join("mnist").join(file.trim_end_matches(".gz"));
        assert!(raw.is_file(), "{} missing", raw.display());
    }
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    // The loader finds the fetched copy and its own verification passes.
    let source = pixreg_datasets::find_local(DatasetName::Mnist, &dir).unwrap();
    assert!(source.is_some());

    // Run again: nothing is downloaded (the mirror is gone), the copy is only verified.
    let again = fetch_data(
        &[
            "mnist",
            "--dir",
            dir.to_str().unwrap(),
            "--from",
            "http://127.0.0.1:9/",
        ],
        tmp.path(),
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("present in")
            && text(&again.stdout).contains("4 file(s) match"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn a_corrupted_byte_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let src = shared().join("fashion-mnist");
    for file in IDX_FILES {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(src.join(file)).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        if file == "train-labels-idx1-ubyte.gz" {
            // One label changed: a valid IDX file, a different dataset.
            raw[100] = (raw[100] + 1) % 10;
        }
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        std::fs::write(served.join(file), gz.finish().unwrap()).unwrap();
    }
    let mirror = serve(served);
    let dir = tmp.path().join("data");
    let out = fetch_data(
        &[
            "fashion-mnist",
            "--dir",
            dir.to_str().unwrap(),
            "--from",
            &mirror,
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error_line.contains("fashion-mnist/train-labels-idx1-ubyte: sha256 mismatch"),
        "{error_line}"
    );
    assert!(
        !dir.join("fashion-mnist").exists(),
        "a refused download was put in place"
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn an_unreachable_source_names_the_url_and_how_to_fetch_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then drop the listener.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tmp.path().join("data");
    let from = format!("http://127.0.0.1:{port}/");
    let out = fetch_data(
        &["mnist", "--dir", dir.to_str().unwrap(), "--from", &from],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{from}train-images-idx3-ubyte.gz")),
        "{stderr}"
    );
    assert!(
        stderr.contains("to fetch it by hand")
            && stderr.contains(&format!("{}/mnist/", dir.display())),
        "{stderr}"
    );
    assert!(!dir.join("mnist").exists());
}

#[test]
fn the_shipped_data_is_present_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared();
    let out = fetch_data(
        &[
            "mnist",
            "fashion-mnist",
            "--dir",
            data.to_str().unwrap(),
            "--from",
            "http://127.0.0.1:9/",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("present in").count(), 2, "{stdout}");
}

/// A GitHub-style archive: one wrapping folder, the kept train/ and test/ folders and a file
/// the `keep` list drops.
fn github_archive(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut tar = tar::Builder::new(GzEncoder::new(file, flate2::Compression::fast()));
    for (name, body) in [
        ("CIFAR-10-images-abc/README.md", b"readme".as_slice()),
        ("CIFAR-10-images-abc/train/cat/0000.jpg", b"train cat"),
        ("CIFAR-10-images-abc/test/dog/0000.jpg", b"test dog"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, body).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn archive_members_are_stripped_kept_and_checked_as_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    github_archive(&served.join("snapshot.tar.gz"));
    let mirror = serve(served);

    // The digest `sha256sum` gives for the two kept files, sorted by path.
    let reference = tmp.path().join("reference");
    for (rel, body) in [
        ("train/cat/0000.jpg", "train cat"),
        ("test/dog/0000.jpg", "test dog"),
    ] {
        let path = reference.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let digest = tree_sha256(&reference, ".").unwrap();
    let info = |digest: &str| DatasetInfo {
        label: "CIFAR-10 (JPEG q75 copy)".into(),
        how_to_get: "by hand".into(),
        download: Some(DownloadSpec {
            base_urls: vec!["http://127.0.0.1:9/".into()],
            files: vec!["snapshot.tar.gz".into()],
            unpack: Unpack::TarGz,
            into: "cifar10-jpeg".into(),
            strip_components: 1,
            keep: vec!["train/".into(), "test/".into()],
            tree_sha256: [(".".to_string(), digest.to_string())].into(),
        }),
    };
    let opts = |dir: PathBuf| FetchOptions {
        data_dir: dir,
        from: Some(mirror.clone()),
        timeout_s: 60,
    };

    let bad = tmp.path().join("bad");
    let err = fetch_dataset(
        DatasetName::Cifar10Jpeg,
        &info(&"0".repeat(64)),
        &opts(bad.clone()),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("sha256 mismatch of the folder's listing"),
        "{err:#}"
    );
    assert!(!bad.join("cifar10-jpeg").exists());

    let good = tmp.path().join("good");
    let fetched = fetch_dataset(
        DatasetName::Cifar10Jpeg,
        &info(&digest),
        &opts(good.clone()),
    )
    .unwrap();
    assert_eq!(fetched, Fetched::Downloaded { verified: 1 });
    let root = good.join("cifar10-jpeg");
    assert_eq!(
        std::fs::read(root.join("train/cat/0000.jpg")).unwrap(),
        b"train cat"
    );
    assert!(root.join("test/dog/0000.jpg").is_file());
    assert!(
        !root.join("README.md").exists(),
        "a member outside `keep` was written"
    );
}
