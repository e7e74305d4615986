package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process: a simulator, a gateway, the floor or Redis.
type proc struct {
	name  string
	cmd   *exec.Cmd
	addr  string // the simulator's URL, or a relay's gRPC address
	admin string // the gateway's admin address, when it has one
	debug string // the gateway's pprof address, when it has one
	done  chan error
}

// launch starts cmd with its stdout or stderr piped (pipe is
// cmd.StdoutPipe or cmd.StderrPipe), on cpu when cpu is not anyCPU.
func launch(cmd *exec.Cmd, pipe func() (io.ReadCloser, error), cpu int, name string) (*proc, io.ReadCloser, error) {
	out, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	if cpu == anyCPU {
		err = cmd.Start()
	} else {
		err = onCPU(cpu, cmd.Start)
	}
	if err != nil {
		return nil, nil, err
	}
	return &proc{name: name, cmd: cmd, done: make(chan error, 1)}, out, nil
}

// anyCPU starts a process with this process's CPU affinity.
const anyCPU = -1

// startPrinter starts bin, a program that prints its address as the first
// line of its stdout (slngsim, speechfloor), and waits for that line.
func startPrinter(ctx context.Context, cpu int, bin string, args ...string) (*proc, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "SLNG_API_KEY=bench-key")
	p, out, err := launch(cmd, cmd.StdoutPipe, cpu, filepath.Base(bin)+" "+strings.Join(args, " "))
	if err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s did not print its address: %w", filepath.Base(bin), err)
	}
	// A second word, when the program serves pprof, is that address.
	p.addr, p.debug, _ = strings.Cut(strings.TrimSpace(line), " ")
	go func() {
		_, _ = io.Copy(io.Discard, out)
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// startSim starts slngsim with args and waits for the URL it prints.
func startSim(ctx context.Context, bin string, args ...string) (*proc, error) {
	return startPrinter(ctx, anyCPU, bin, append([]string{"--listen", "127.0.0.1:0", "--log-level", "error"}, args...)...)
}

// startFloor starts speechfloor, the bare relay, against simURL, on cpu,
// and waits for the gRPC address it prints; with debug, it serves pprof
// too.
func startFloor(ctx context.Context, cpu int, bin, simURL string, debug bool) (*proc, error) {
	args := []string{"--listen", "127.0.0.1:0", "--slng-base-url", simURL, "--max-streams-per-conn", "10000"}
	if debug {
		args = append(args, "--debug-listen", "127.0.0.1:0")
	}
	return startPrinter(ctx, cpu, bin, args...)
}

// startGateway starts speech-gateway against simURL, on cpu, and waits
// until it serves; args add flags.
func startGateway(ctx context.Context, cpu int, bin, simURL string, args ...string) (*proc, error) {
	all := append([]string{"--listen", "127.0.0.1:0", "--slng-base-url", simURL,
		"--log-format", "json", "--log-level", "info", "--max-streams-per-conn", "10000"}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.Env = append(os.Environ(), "SPEECH_GATEWAY_SLNG_API_KEY=bench-key")
	p, errPipe, err := launch(cmd, cmd.StderrPipe, cpu, "speech-gateway "+strings.Join(args, " "))
	if err != nil {
		return nil, err
	}
	addr := make(chan [3]string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			var m struct {
				Msg   string `json:"msg"`
				GRPC  string `json:"grpc"`
				Admin string `json:"admin"`
				Debug string `json:"debug"`
			}
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" && !sent {
				addr <- [3]string{m.GRPC, m.Admin, m.Debug}
				sent = true
				continue
			}
			if strings.Contains(sc.Text(), `"level":"error"`) {
				fmt.Fprintf(os.Stderr, "gateway: %s\n", sc.Text())
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case a := <-addr:
		p.addr, p.admin, p.debug = a[0], a[1], a[2]
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("speech-gateway exited before serving: %v", err)
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		return nil, errors.New("speech-gateway did not start in 20 s")
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// usage is a process's CPU time and resident memory, from /proc, and for
// the gateway its heap allocations so far, from its /metrics.
type usage struct {
	cpu     time.Duration
	rss     int64 // bytes
	mallocs float64
}

func (p *proc) usage() (usage, error) {
	u, err := p.osUsage()
	if err != nil || p.admin == "" {
		return u, err
	}
	u.mallocs, err = p.metric("go_memstats_mallocs_total")
	if err != nil {
		return usage{}, err
	}
	return u, nil
}

// osUsage is usage without the allocations: what /proc says, which costs
// the process nothing. Sampling loops use it, so that the benchmark does not
// charge the gateway for serving /metrics ten times a second (the floor
// serves none).
func (p *proc) osUsage() (usage, error) {
	pid := p.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, err
	}
	// Fields after the command name, which is in parentheses.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	u := usage{cpu: time.Duration(utime+stime) * time.Second / clockTicks}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			u.rss = kb << 10
		}
	}
	return u, nil
}

// metric reads one unlabelled value from the gateway's /metrics.
func (p *proc) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

// profile fetches a CPU profile ("profile") or the allocations ("allocs")
// over d from a gateway started with --debug-listen, into path.
func (p *proc) profile(ctx context.Context, kind string, d time.Duration, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", p.debug, kind, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", kind, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
