// Package oci writes the OCI runtime bundle of a sandbox: config.json for
// runc or runsc with the confinement of design.md section 3 (seccomp
// allowlist, no capabilities, no-new-privileges, read-only root, tmpfs /tmp,
// a read-write workspace, cgroup limits, the sandbox's network namespace).
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// HostDirs are bound read-only from the host when the rootfs is "host".
var HostDirs = []string{"/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin", "/etc"}

// Bind is a bind mount into the sandbox.
type Bind struct {
	Source, Dest string
	ReadOnly     bool
	// AllowSetuid keeps setuid bits effective on this mount (used by the
	// escape suite to prove no-new-privileges holds without nosuid).
	AllowSetuid bool
}

// Config is the input of Write.
type Config struct {
	Args     []string
	Env      []string
	Cwd      string
	UID, GID uint32
	Terminal bool
	Rows     uint // console size when Terminal
	Cols     uint
	Hostname string

	// HostRootfs makes the root an empty directory with the host's system
	// directories bound read-only; otherwise Rootfs is used as the root.
	HostRootfs bool
	Rootfs     string

	Workspace string // bound read-write at /workspace (nosuid, nodev)
	// Files are bound read-only over paths in the sandbox (e.g.
	// /etc/resolv.conf, the CA bundle); targets must exist in the rootfs.
	Files []Bind
	Binds []Bind

	NetNSPath   string
	CgroupsPath string
	CPUs        float64
	Memory      int64
	Pids        int64
	MemorySwap  bool // set memory+swap to the same limit (cgroup v1 with swap accounting)
}

// Write creates dir/config.json (and dir/rootfs for a host rootfs) and
// returns the spec written.
func Write(dir string, c Config) (*specs.Spec, error) {
	if len(c.Args) == 0 {
		return nil, errors.New("oci: no command")
	}
	root := c.Rootfs
	if c.HostRootfs {
		root = filepath.Join(dir, "rootfs")
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, err
		}
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: c.Hostname,
		Root:     &specs.Root{Path: root, Readonly: true},
		Process: &specs.Process{
			Terminal:        c.Terminal,
			User:            specs.User{UID: c.UID, GID: c.GID},
			Args:            c.Args,
			Env:             c.Env,
			Cwd:             c.Cwd,
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
		},
		Mounts: baseMounts(),
		Linux: &specs.Linux{
			CgroupsPath: c.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: c.NetNSPath},
			},
			Resources: resources(c),
			Seccomp:   Seccomp(),
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
				"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if c.Terminal && c.Rows > 0 && c.Cols > 0 {
		s.Process.ConsoleSize = &specs.Box{Height: c.Rows, Width: c.Cols}
	}
	if c.HostRootfs {
		for _, d := range HostDirs {
			fi, err := os.Lstat(d)
			if err != nil {
				continue
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				// Merged /usr: recreate the symlink instead of binding it.
				tgt, err := os.Readlink(d)
				if err != nil {
					return nil, err
				}
				if err := os.Symlink(tgt, filepath.Join(root, d)); err != nil && !errors.Is(err, os.ErrExist) {
					return nil, err
				}
				continue
			}
			s.Mounts = append(s.Mounts, bind(Bind{Source: d, Dest: d, ReadOnly: true}))
		}
	}
	if c.Workspace != "" {
		s.Mounts = append(s.Mounts, bind(Bind{Source: c.Workspace, Dest: "/workspace"}))
	}
	for _, f := range c.Files {
		f.ReadOnly = true
		s.Mounts = append(s.Mounts, bind(f))
	}
	for _, b := range c.Binds {
		s.Mounts = append(s.Mounts, bind(b))
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	return s, nil
}

func baseMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		// mode=1777: a non-root sandbox user must be able to write here.
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=256m"}},
	}
}

func bind(b Bind) specs.Mount {
	opts := []string{"rbind", "nodev"}
	if !b.AllowSetuid {
		opts = append(opts, "nosuid")
	}
	if b.ReadOnly {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	return specs.Mount{Destination: b.Dest, Type: "bind", Source: b.Source, Options: opts}
}

func resources(c Config) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if c.CPUs > 0 {
		period := uint64(100000)
		quota := int64(c.CPUs * float64(period))
		r.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if c.Memory > 0 {
		m := c.Memory
		r.Memory = &specs.LinuxMemory{Limit: &m}
		if c.MemorySwap {
			r.Memory.Swap = &m
		}
	}
	if c.Pids > 0 {
		p := c.Pids
		r.Pids = &specs.LinuxPids{Limit: &p}
	}
	return r
}
