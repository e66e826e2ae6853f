// Package devenv starts throwaway PostgreSQL servers and embedded Kafka
// brokers for tests, the benchmark and the `relay dev` mode, and reads back
// what reached Kafka with franz-go (ReadAll, CountRecords, Topics), a client
// independent of the relay's own sarama.
//
// Each PostgreSQL server is a fresh cluster made by initdb in its own
// temporary directory, configured for logical replication, trusting every
// local connection and listening on 127.0.0.1 on a port picked free at start.
// initdb and the server refuse to run as root, so when we are root they run as
// the postgres system user (the Debian package creates it) and the
// directories they write are handed to that user. The broker is a kfake
// cluster served over TCP on 127.0.0.1, so the relay reaches it like a real
// Kafka. Everything is throwaway: Close removes the data, and nothing here is
// tuned for durability (fsync is off).
//
// The package does not import testing, so `relay dev` can use it (only in a
// binary built with -tags relaydev, as ./dev.sh does: the production binary
// links none of this); the devenvtest package wraps it for tests.
package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// debianPGBin is where the Debian postgresql package puts the server
// binaries, which are not on PATH there.
const debianPGBin = "/usr/lib/postgresql/15/bin"

const (
	// pgCtlTimeout bounds pg_ctl's own waits; they are long because a
	// loaded CI machine under -race can be slow to run crash recovery.
	pgCtlTimeout = 60 * time.Second
	// startAttempts bounds retries when another process takes the port
	// between our probe and the server's bind.
	startAttempts = 3
	// logTailBytes is how much server output we keep for error messages.
	logTailBytes = 4 << 10
)

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Settings are extra postgresql.conf settings, e.g.
	// "max_slot_wal_keep_size": "64MB". They override the defaults.
	Settings map[string]string
	// HBA lines go before the default trust lines of pg_hba.conf, so they
	// take precedence.
	HBA []string
	// Log receives the server's log output; by default it goes to
	// postgres.log in the data directory. Writes must not block for long:
	// the server stalls while its log pipe is full.
	Log io.Writer
	// Version is the PostgreSQL major version to run (15, 16, ...). Zero
	// means the default binaries: RELAY_TEST_PG_BIN (a bin directory),
	// else RELAY_TEST_PG_VERSION (a major version), else PATH, else the
	// Debian packages. A major version is looked up in the Debian
	// location, then in the cache .ci/ensure-postgres-versions fills
	// (RELAY_PG_CACHE, see pgCacheDir).
	Version int
	// DataFrom is the data directory of a cleanly stopped cluster (the
	// DataDir of another Postgres after Stop): the new server starts on a
	// copy of it instead of a fresh initdb, with Settings, HBA and its own
	// port and socket applied on top. Used to make a physical standby.
	DataFrom string
	// Standby starts the server as a standby (a standby.signal file);
	// primary_conninfo and friends go into Settings. Needs DataFrom.
	Standby bool
}

// Postgres is a throwaway PostgreSQL server.
type Postgres struct {
	bins    pgBinaries
	owner   *syscall.Credential // nil when the server runs as us
	dir     string
	dataDir string
	sockDir string
	port    int // fixed once StartPostgres returns

	log     *lockedWriter
	logFile *os.File // set when we own the log destination
	copiers sync.WaitGroup

	watchdog     *exec.Cmd
	watchdogPipe *os.File // closing it, or our death, fires the watchdog

	mu      sync.Mutex // serialises lifecycle operations
	running bool
	closed  bool
}

// StartPostgres creates a new cluster in a temporary directory and starts a
// server on a free port. The caller must Close it.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.Standby && opts.DataFrom == "" {
		return nil, errors.New("starting a PostgreSQL standby: Standby needs DataFrom")
	}
	bins, err := pgBinariesFor(opts.Version)
	if err != nil {
		return nil, err
	}
	owner, err := serverOwner()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "relay-devenv-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating PostgreSQL temp dir: %w", err)
	}
	p := &Postgres{
		bins:    bins,
		owner:   owner,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
	}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	// The server user needs to enter the temp dir to reach the data and
	// socket dirs; MkdirTemp makes it 0700.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making %s traversable: %w", dir, err)
	}
	if opts.DataFrom == "" {
		if err := os.Mkdir(p.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating PostgreSQL data dir: %w", err)
		}
	}
	if err := os.Mkdir(p.sockDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating PostgreSQL socket dir: %w", err)
	}
	if owner != nil {
		for _, d := range []string{dir, p.dataDir, p.sockDir} {
			if opts.DataFrom != "" && d == p.dataDir {
				continue // made by the copy below, as the owner
			}
			if err := os.Chown(d, int(owner.Uid), int(owner.Gid)); err != nil {
				return nil, fmt.Errorf("handing %s to the postgres user: %w", d, err)
			}
		}
	}

	if err := p.startWatchdog(); err != nil {
		return nil, err
	}

	if opts.DataFrom != "" {
		if err := p.copyData(ctx, opts.DataFrom, opts.Standby); err != nil {
			return nil, err
		}
	} else {
		initdb := p.command(ctx, bins.initdb, "-D", p.dataDir, "-U", "postgres",
			"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
		if out, err := initdb.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb in %s: %w\n%s", p.dataDir, err, bytes.TrimSpace(out))
		}
	}
	if err := p.writeConfig(opts); err != nil {
		return nil, err
	}

	if opts.Log != nil {
		p.log = &lockedWriter{w: opts.Log}
	} else {
		// initdb wants an empty data dir, so the log file can only be
		// created now.
		f, err := os.OpenFile(filepath.Join(p.dataDir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("creating PostgreSQL log file: %w", err)
		}
		p.logFile = f
		p.log = &lockedWriter{w: f}
	}

	for attempt := 1; ; attempt++ {
		if p.port, err = freePort(); err != nil {
			return nil, err
		}
		// The last setting of a parameter wins, so a retry can just
		// append a new port.
		if err := appendFile(filepath.Join(p.dataDir, "postgresql.conf"), fmt.Sprintf("port = %d\n", p.port)); err != nil {
			return nil, err
		}
		err = p.startServer(ctx, "start")
		if err == nil {
			break
		}
		var se *serverError
		if attempt < startAttempts && errors.As(err, &se) && se.bindFailed() {
			continue
		}
		return nil, err
	}
	ok = true
	return p, nil
}

// URL returns a connection URL for user on database db over TCP, like
// postgres://user@127.0.0.1:PORT/db?sslmode=disable.
func (p *Postgres) URL(user, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// SuperURL returns a connection URL for the superuser on the postgres
// database.
func (p *Postgres) SuperURL() string { return p.URL("postgres", "postgres") }

// Port returns the TCP port the server listens on; it survives restarts.
func (p *Postgres) Port() int { return p.port }

// DataDir returns the cluster's data directory.
func (p *Postgres) DataDir() string { return p.dataDir }

// Version returns the server's major version (15, 16, ...).
func (p *Postgres) Version() int { return p.bins.major }

// copyData makes the data dir a copy of src, a cleanly stopped cluster's,
// copied as the server's owner so that ownership and modes carry over.
func (p *Postgres) copyData(ctx context.Context, src string, standby bool) error {
	if _, err := os.Stat(filepath.Join(src, "postmaster.pid")); err == nil {
		return fmt.Errorf("copying PostgreSQL data dir %s: it has a postmaster.pid, stop that server first", src)
	}
	cmd := p.command(ctx, "cp", "-a", src, p.dataDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copying PostgreSQL data dir %s: %w\n%s", src, err, bytes.TrimSpace(out))
	}
	if !standby {
		return nil
	}
	// Written as the owner too: the server must be able to remove it
	// when promoted.
	cmd = p.command(ctx, "touch", filepath.Join(p.dataDir, "standby.signal"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating standby.signal: %w\n%s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Restart restarts the server with a fast shutdown, which disconnects every
// client, and waits until it accepts connections on the same port again. A
// stopped server is just started.
func (p *Postgres) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("restarting PostgreSQL: server is closed")
	}
	if !p.running {
		return p.startServer(ctx, "start")
	}
	p.running = false
	return p.startServer(ctx, "restart", "-m", "fast")
}

// Stop shuts the server down with a fast shutdown. Stopping a stopped
// server does nothing.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.running {
		return nil
	}
	if err := p.pgCtlStop("fast"); err != nil {
		return err
	}
	p.running = false
	return nil
}

// StopImmediate shuts the server down with an immediate shutdown: no
// checkpoint, clients cut off, the next start runs crash recovery, as
// after a crash of the machine. Stopping a stopped server does nothing.
func (p *Postgres) StopImmediate() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.running {
		return nil
	}
	if err := p.pgCtlStop("immediate"); err != nil {
		return err
	}
	p.running = false
	return nil
}

// Promote promotes a standby to primary and waits until it is done.
func (p *Postgres) Promote(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := p.command(ctx, p.bins.pgCtl, "-D", p.dataDir, "-w",
		"-t", strconv.Itoa(int(pgCtlTimeout/time.Second)), "promote")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl promote (data dir %s): %w\n%s", p.dataDir, err, bytes.TrimSpace(out))
	}
	return nil
}

// Start starts the server again after Stop, on the same port, and waits
// until it accepts connections. Starting a running server does nothing.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("starting PostgreSQL: server is closed")
	}
	if p.running {
		return nil
	}
	return p.startServer(ctx, "start")
}

// Close kills the server without a clean shutdown and removes its
// directory. It may be called more than once, and after Stop.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.running = false

	var errs []error
	// Go by the pid file rather than p.running: a start that failed or
	// timed out can leave a live postmaster behind.
	if _, err := os.Stat(filepath.Join(p.dataDir, "postmaster.pid")); err == nil {
		errs = append(errs, p.pgCtlStop("immediate"))
	}
	// Once the postmaster and its children are gone the log pipes reach
	// EOF; the bound only matters if something else still holds one.
	done := make(chan struct{})
	go func() { p.copiers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if p.logFile != nil {
		errs = append(errs, p.logFile.Close())
	}
	if err := os.RemoveAll(p.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing PostgreSQL temp dir: %w", err))
	}
	p.stopWatchdog()
	return errors.Join(errs...)
}

// watchdogScript waits for EOF on stdin, which comes when Close closes the
// pipe or when our process dies without calling Close (killed, or a test
// binary exiting on a timeout), then kills the server and removes its
// directory. After a Close it finds nothing left to do.
const watchdogScript = `read _
"$1" -D "$2" -w stop -m immediate >/dev/null 2>&1
rm -rf "$3"`

// startWatchdog starts a helper process that outlives us, so that servers
// of a crashed test or `relay dev` do not linger. It runs as the server's
// owner because pg_ctl refuses root, and in its own process group so that a
// Ctrl-C aimed at us does not kill it before it has cleaned up.
func (p *Postgres) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating PostgreSQL watchdog pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "relay-devenv-watchdog", p.bins.pgCtl, p.dataDir, p.dir)
	cmd.Dir = p.dir
	cmd.Env = toolEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.owner}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting PostgreSQL watchdog: %w", err)
	}
	p.watchdog, p.watchdogPipe = cmd, w
	return nil
}

func (p *Postgres) stopWatchdog() {
	if p.watchdog == nil {
		return
	}
	p.watchdogPipe.Close()
	done := make(chan struct{})
	go func() { p.watchdog.Wait(); close(done) }() //nolint:errcheck // its exit status says nothing useful after Close
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Leave it to finish on its own; init reaps it if we exit.
	}
	p.watchdog = nil
}

// Exec runs sql as the superuser on the postgres database. Without args
// it uses the simple protocol, so sql may hold several statements.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, p.SuperURL())
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL on port %d: %w", p.port, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("executing %q: %w", abbreviate(sql, 80), err)
	}
	return nil
}

// writeConfig appends our settings to postgresql.conf and replaces
// pg_hba.conf.
func (p *Postgres) writeConfig(opts PostgresOptions) error {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": p.sockDir,
		"wal_level":               "logical",
		"max_wal_senders":         "20",
		"max_replication_slots":   "20",
		"fsync":                   "off",
		"synchronous_commit":      "on",
		"full_page_writes":        "off",
		"wal_sender_timeout":      "60s",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	var conf strings.Builder
	conf.WriteString("\n# added by relay devenv\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&conf, "%s = %s\n", k, confQuote(settings[k]))
	}
	if err := appendFile(filepath.Join(p.dataDir, "postgresql.conf"), conf.String()); err != nil {
		return err
	}

	var hba strings.Builder
	for _, l := range opts.HBA {
		hba.WriteString(l)
		hba.WriteByte('\n')
	}
	hba.WriteString("local all all trust\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"local replication all trust\n" +
		"host replication all 127.0.0.1/32 trust\n")
	// Truncating keeps the file's owner, which the server needs.
	if err := os.WriteFile(filepath.Join(p.dataDir, "pg_hba.conf"), []byte(hba.String()), 0o600); err != nil {
		return fmt.Errorf("writing pg_hba.conf: %w", err)
	}
	return nil
}

// startServer runs a pg_ctl subcommand that launches a postmaster (start or
// restart) and waits until the server accepts connections.
func (p *Postgres) startServer(ctx context.Context, args ...string) error {
	// pg_ctl without -l hands its stdout to the postmaster, so a pipe we
	// drain becomes the server log. A pipe per postmaster lets us tell
	// when a failed one has written its last words.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating PostgreSQL log pipe: %w", err)
	}
	tail := &Tail{Max: logTailBytes}
	done := make(chan struct{})
	p.copiers.Add(1)
	go func() {
		defer p.copiers.Done()
		defer close(done)
		defer r.Close()
		drain(r, p.log, tail)
	}()

	full := append([]string{"-D", p.dataDir, "-w", "-t", strconv.Itoa(int(pgCtlTimeout / time.Second))}, args...)
	cmd := p.command(ctx, p.bins.pgCtl, full...)
	// An *os.File is passed to the child as is, so Run does not wait for
	// the postmaster to close it.
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Run()
	w.Close()
	if err != nil {
		// The postmaster is usually dead by now; give its output a
		// moment to arrive through the pipe.
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		return &serverError{op: "starting PostgreSQL with pg_ctl " + args[0], port: p.port, err: err, log: tail.String()}
	}
	p.running = true
	if err := p.waitReady(ctx); err != nil {
		return &serverError{op: "waiting for PostgreSQL to accept connections", port: p.port, err: err, log: tail.String()}
	}
	return nil
}

// waitReady polls until a connection succeeds: pg_ctl -w only watches the
// pid file, which can be ahead of what a client sees.
func (p *Postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pgCtlTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, p.SuperURL())
		ccancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func (p *Postgres) pgCtlStop(mode string) error {
	cmd := p.command(context.Background(), p.bins.pgCtl, "-D", p.dataDir, "-w",
		"-t", strconv.Itoa(int(pgCtlTimeout/time.Second)), "stop", "-m", mode)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop -m %s (data dir %s): %w\n%s", mode, p.dataDir, err, bytes.TrimSpace(out))
	}
	return nil
}

// command prepares a PostgreSQL tool to run as the server's owner.
func (p *Postgres) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	// The postgres user may not be able to enter our working directory.
	cmd.Dir = p.dir
	cmd.Env = toolEnv()
	if p.owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.owner}
	}
	return cmd
}

// toolEnv drops PG* variables so a developer's shell settings cannot point
// the tools at another cluster, and pins the C locale so messages we match
// on are in English.
func toolEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

type pgBinaries struct {
	initdb, pgCtl string
	major         int
}

var (
	pgBinMu sync.Mutex
	pgBins  = map[int]pgBinaries{}
)

// Environment variables that pick the default server binaries.
const (
	envPGBin     = "RELAY_TEST_PG_BIN"
	envPGVersion = "RELAY_TEST_PG_VERSION"
	envPGCache   = "RELAY_PG_CACHE"
)

// pgCacheDir is where .ci/ensure-postgres-versions installs server
// binaries, one major version per subdirectory (<dir>/17/bin):
// RELAY_PG_CACHE, else /var/cache/relay-postgres as root (the postgres
// user must be able to reach it, which it cannot under /root), else
// relay-postgres in the user's cache dir. The script computes the same.
func pgCacheDir() string {
	if d := os.Getenv(envPGCache); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/relay-postgres"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "relay-postgres")
	}
	return filepath.Join(os.TempDir(), "relay-postgres")
}

// FindPostgres reports whether the server binaries of a major version (0:
// the default ones, see PostgresOptions.Version) are installed, and
// returns their major version.
func FindPostgres(version int) (int, error) {
	b, err := pgBinariesFor(version)
	return b.major, err
}

func pgBinariesFor(version int) (pgBinaries, error) {
	pgBinMu.Lock()
	defer pgBinMu.Unlock()
	if b, ok := pgBins[version]; ok {
		return b, nil
	}
	b, err := findPGBinaries(version)
	if err != nil {
		return b, err
	}
	pgBins[version] = b
	return b, nil
}

// findPGBinaries looks for initdb, pg_ctl and postgres. The three must come
// from the same place: pg_ctl runs the postgres next to it, and mixing
// versions fails in confusing ways.
func findPGBinaries(version int) (pgBinaries, error) {
	if version == 0 {
		if dir := os.Getenv(envPGBin); dir != "" {
			b, err := binariesIn(dir)
			if err != nil {
				return b, fmt.Errorf("%s=%s: %w", envPGBin, dir, err)
			}
			return b, nil
		}
		if v := os.Getenv(envPGVersion); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return pgBinaries{}, fmt.Errorf("%s=%q: want a PostgreSQL major version such as 17", envPGVersion, v)
			}
			return findPGBinaries(n)
		}
		// PATH first so a developer's own PostgreSQL wins.
		if paths, ok := lookAll(pgNames, func(n string) (string, error) { return exec.LookPath(n) }); ok {
			return withVersion(pgBinaries{initdb: paths[0], pgCtl: paths[1]}, filepath.Join(filepath.Dir(paths[1]), "postgres"))
		}
		// Debian installs each major version side by side; 15 is what the
		// project targets, any other found is better than none.
		dirs := []string{debianPGBin}
		if more, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(more) > 0 {
			sort.Sort(sort.Reverse(sort.StringSlice(more)))
			dirs = append(dirs, more...)
		}
		for _, dir := range dirs {
			if b, err := binariesIn(dir); err == nil {
				return b, nil
			}
		}
		return pgBinaries{}, fmt.Errorf("PostgreSQL server binaries not found: install the Debian package postgresql (looked for initdb, pg_ctl and postgres on PATH and in %s)", debianPGBin)
	}
	dirs := []string{
		fmt.Sprintf("/usr/lib/postgresql/%d/bin", version),
		filepath.Join(pgCacheDir(), strconv.Itoa(version), "bin"),
	}
	for _, dir := range dirs {
		b, err := binariesIn(dir)
		if err != nil {
			continue
		}
		if b.major != version {
			return b, fmt.Errorf("PostgreSQL %d wanted, but %s has PostgreSQL %d", version, dir, b.major)
		}
		return b, nil
	}
	return pgBinaries{}, fmt.Errorf("PostgreSQL %d server binaries not found in %s: run .ci/ensure-postgres-versions (or set %s to a bin directory)", version, strings.Join(dirs, " or "), envPGBin)
}

var pgNames = []string{"initdb", "pg_ctl", "postgres"}

func binariesIn(dir string) (pgBinaries, error) {
	paths, ok := lookAll(pgNames, func(n string) (string, error) {
		path := filepath.Join(dir, n)
		fi, err := os.Stat(path)
		if err != nil {
			return "", err
		}
		if fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not executable", path)
		}
		return path, nil
	})
	if !ok {
		return pgBinaries{}, fmt.Errorf("no initdb, pg_ctl and postgres in %s", dir)
	}
	return withVersion(pgBinaries{initdb: paths[0], pgCtl: paths[1]}, paths[2])
}

// withVersion asks the postgres binary for its major version, which also
// proves it runs (the npm builds carry their own libraries).
func withVersion(b pgBinaries, postgres string) (pgBinaries, error) {
	out, err := exec.Command(postgres, "--version").Output()
	if err != nil {
		return b, fmt.Errorf("running %s --version: %w", postgres, err)
	}
	// "postgres (PostgreSQL) 17.10" or "... 15.14 (Debian 15.14-0+deb12u1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return b, fmt.Errorf("%s --version printed %q", postgres, out)
	}
	major, _, _ := strings.Cut(f[2], ".")
	if b.major, err = strconv.Atoi(major); err != nil {
		return b, fmt.Errorf("%s --version printed %q", postgres, out)
	}
	return b, nil
}

func lookAll(names []string, look func(string) (string, error)) ([]string, bool) {
	var paths []string
	for _, n := range names {
		path, err := look(n)
		if err != nil {
			return nil, false
		}
		if path, err = filepath.Abs(path); err != nil {
			return nil, false
		}
		paths = append(paths, path)
	}
	return paths, true
}

// serverOwner returns the credentials to run PostgreSQL tools with, or nil
// to run them as ourselves.
func serverOwner() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user to run it as (install the Debian package postgresql): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of user postgres: %w", err)
	}
	// An empty Groups drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// freePort asks the kernel for a free port. Someone else may take it before
// the server binds, which StartPostgres handles by retrying.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// confQuote quotes a postgresql.conf value. Quoting everything is fine:
// the server parses numbers, units and booleans from quoted strings too.
func confQuote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `''`)
	return "'" + v + "'"
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func abbreviate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// serverError is a failed start, carrying the end of the server's output.
type serverError struct {
	op   string
	port int
	err  error
	log  string
}

func (e *serverError) Error() string {
	log := strings.TrimSpace(e.log)
	if log == "" {
		log = "(empty)"
	}
	return fmt.Sprintf("%s (port %d): %v; server log tail:\n%s", e.op, e.port, e.err, log)
}

func (e *serverError) Unwrap() error { return e.err }

func (e *serverError) bindFailed() bool {
	return strings.Contains(e.log, "could not bind") || strings.Contains(e.log, "Address already in use")
}

// drain copies the server's output until EOF. It keeps reading even when
// a destination fails, since a full pipe would stall the server.
func drain(r io.Reader, dst io.Writer, tail *Tail) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = tail.Write(buf[:n]) // a Tail never fails
			_, _ = dst.Write(buf[:n])  // see above: a failing destination must not stop the reading
		}
		if err != nil {
			return
		}
	}
}

// lockedWriter serialises the output of the postmasters of successive
// starts, whose lifetimes can overlap by a little.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
