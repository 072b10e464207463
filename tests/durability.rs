//! Power loss: what Iris acknowledged survives a filesystem that stops without writing what
//! was not synced, and is delivered exactly once afterwards. A disk failing under Iris: its
//! errors are reported as I/O errors, and a restart once it is back recovers everything.
//!
//! The database lives on ext4 in a loop device that the test shuts down with
//! `EXT4_IOC_SHUTDOWN` and `FS_GOING_DOWN_NOLOGFLUSH`: everything not yet synced (page cache,
//! the uncommitted journal) is gone, as after a power cut. Needs root (loop devices, mount);
//! without it the test says why it is skipped, in its output.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Console, deliveries, fake_config_yaml, wait_for_blocking, wait_for_no_processes};
use iris::api::MessageOutcome;
use iris::console::Message;
use iris::pool::PoolEvent;
use iris::store::MessageState;
use serde_json::json;

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (a loop device and mount)".to_owned());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: loop devices are not available".to_owned());
    }
    for (program, argument) in [
        ("mkfs.ext4", "-V"),
        ("losetup", "--version"),
        ("python3", "--version"),
    ] {
        let found = Command::new(program)
            .arg(argument)
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            return Some(format!("`{program}` is not installed"));
        }
    }
    None
}

fn run(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program).args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// An ext4 filesystem in a file, on a loop device, mounted; unmounted and detached when
/// dropped.
struct LoopFs {
    device: String,
    mount: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(dir: &Path) -> Self {
        let image = dir.join("disk.img");
        run("truncate", &["-s", "96M", image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let mut fs = Self {
            device,
            mount,
            mounted: false,
        };
        fs.mount();
        fs
    }

    fn mount(&mut self) {
        run("mount", &[&self.device, self.mount.to_str().unwrap()]);
        self.mounted = true;
    }

    fn unmount(&mut self) {
        run("umount", &[self.mount.to_str().unwrap()]);
        self.mounted = false;
    }

    /// Stops the filesystem at once, dropping what was not synced: `EXT4_IOC_SHUTDOWN`
    /// (`_IOR('X', 125, __u32)`) with `FS_GOING_DOWN_NOLOGFLUSH` (2). Every later access
    /// fails with EIO until it is mounted again.
    fn cut_power(&self) {
        let script = format!(
            "import fcntl, os, struct\nfd = os.open({:?}, os.O_RDONLY)\nfcntl.ioctl(fd, 0x8004587D, struct.pack('I', 2))\n",
            self.mount.display().to_string()
        );
        run("python3", &["-c", &script]);
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&self.mount)
                .status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn acknowledged_messages_survive_power_loss_and_are_delivered_exactly_once() {
    if let Some(reason) = unsupported() {
        println!("SKIPPED acknowledged_messages_survive_power_loss: {reason}");
        eprintln!("SKIPPED acknowledged_messages_survive_power_loss: {reason}");
        return;
    }
    // As subreaper this test adopts the agents of the Iris it kills, and reaps them.
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut disk = LoopFs::new(dir.path());
    // Only the database is on the disk that loses power; the config, the team's project and
    // the fake agent's log (which counts deliveries) are not.
    let home = disk.mount.join("iris-home");
    let marker = format!("iris-power-{}", uuid::Uuid::new_v4());
    let log = dir.path().join("agent.log");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        fake_config_yaml(dir.path(), &marker, &["backend"], "", &|_| {
            format!("      FAKE_AGENT_LOG: {}\n", log.display())
        }),
    )
    .unwrap();

    let mut console = Console::start(Some(&config), &home, true);
    let tell = |console: &mut Console, text: String| {
        let told: MessageOutcome =
            console.ok(json!({"op": "tell", "from": "frontend", "to": "backend", "message": text}));
        told.message_id
    };
    // One message the agent works on (it stays running), then acknowledged ones behind it.
    let running = tell(
        &mut console,
        "[[slow:600000]] power-loss running".to_owned(),
    );
    console.event(
        "the running message's turn",
        |event| matches!(event, PoolEvent::TurnStarted { id, .. } if *id == running),
    );
    console.event("the agent answering it", |event| {
        matches!(
            event,
            PoolEvent::Agent {
                event: iris::agent::AgentEvent::Answering,
                ..
            }
        )
    });
    let queued: Vec<_> = (0..20)
        .map(|index| tell(&mut console, format!("power-loss queued {index:02}")))
        .collect();

    disk.cut_power();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(console.child.id().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    console.child.wait().unwrap();
    wait_for_no_processes(&marker);
    disk.unmount();
    disk.mount();

    let mut console = Console::start(Some(&config), &home, false);
    for (index, id) in queued.iter().enumerate() {
        let found: Message =
            console.ok(json!({"op": "message", "messageId": id, "waitMs": 60_000}));
        assert_eq!(
            found.message.state,
            MessageState::Completed,
            "acknowledged message {index} after the power cut: {found:?}"
        );
    }
    let found: Message = console.ok(json!({"op": "message", "messageId": running}));
    assert_eq!(found.message.state, MessageState::Interrupted, "{found:?}");
    // Exactly once each: the running one before the cut (not re-run), the others after.
    wait_for_blocking("every delivery logged", || {
        deliveries(&log, "power-loss queued 19") == 1
    });
    assert_eq!(deliveries(&log, "power-loss running"), 1);
    for index in 0..20 {
        assert_eq!(
            deliveries(&log, &format!("power-loss queued {index:02}")),
            1,
            "message {index}"
        );
    }
    console.stop();
    wait_for_no_processes(&marker);
}

/// A disk that fails with EIO under a running Iris: every call that touches it says it is
/// an I/O error and what to check, never that the database is not valid or should be moved
/// aside; once the disk is back, a restart finds everything that was stored.
#[test]
fn io_errors_are_reported_as_io_errors_and_a_restart_recovers() {
    if let Some(reason) = unsupported() {
        println!("SKIPPED io_errors_are_reported_as_io_errors: {reason}");
        eprintln!("SKIPPED io_errors_are_reported_as_io_errors: {reason}");
        return;
    }
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut disk = LoopFs::new(dir.path());
    let home = disk.mount.join("iris-home");
    let marker = format!("iris-eio-{}", uuid::Uuid::new_v4());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        fake_config_yaml(dir.path(), &marker, &["backend"], "", &|_| String::new()),
    )
    .unwrap();
    let mut console = Console::start(Some(&config), &home, false);
    // A tell: acknowledged, so synced, so it is on the disk when the disk fails.
    let told: MessageOutcome = console.ok(
        json!({"op": "tell", "from": "frontend", "to": "backend", "message": "before the fault"}),
    );
    let before = told.message_id;
    let done: Message = console.ok(json!({"op": "message", "messageId": before, "waitMs": 60_000}));
    assert_eq!(done.message.state, MessageState::Completed, "{done:?}");
    // Another tell's sync (of the whole log) makes the first one's completion durable too.
    let _: MessageOutcome = console
        .ok(json!({"op": "tell", "from": "frontend", "to": "backend", "message": "sync it"}));
    disk.cut_power();
    for request in [
        json!({"op": "tell", "from": "frontend", "to": "backend", "message": "during"}),
        json!({"op": "send", "from": "frontend", "to": "backend", "message": "during"}),
        json!({"op": "message", "messageId": before}),
        json!({"op": "report", "from": "frontend", "to": "backend"}),
        json!({"op": "tell", "from": "frontend", "to": "backend", "message": "during 2"}),
    ] {
        let error = console.refused(request.clone());
        assert!(error.contains("I/O error on "), "{request}: {error}");
        assert!(error.contains("check `dmesg`"), "{request}: {error}");
        for wrong in ["not a valid Iris database", "move it aside", "as damaged"] {
            assert!(!error.contains(wrong), "{request}: {error}");
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(console.child.id().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    console.child.wait().unwrap();
    wait_for_no_processes(&marker);
    disk.unmount();
    disk.mount();

    // The disk is back: a restart finds what was stored, and works.
    let mut console = Console::start(Some(&config), &home, false);
    let found: Message = console.ok(json!({"op": "message", "messageId": before}));
    assert_eq!(found.message.state, MessageState::Completed, "{found:?}");
    let sent: iris::console::Sent = console.ok(
        json!({"op": "send", "from": "frontend", "to": "backend", "message": "after the fault"}),
    );
    assert_ne!(sent.outcome.message_id, before);
    console.stop();
    wait_for_no_processes(&marker);
}
