/* SPDX-License-Identifier: MIT */
/* Instructions per served fault, counted by callgrind in the monitor process only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static char tmpdir[] = "/tmp/uffd-bench-cg.XXXXXX";

static bool have_valgrind(void)
{
	return system("valgrind --version >/dev/null 2>&1") == 0;
}

/* Total instructions (Ir) of one run of uffd-bench-cg under callgrind, or dies. */
static double cg_run(const char *side, size_t faults, int pause_us, int threads)
{
	char cg[4096], faulter[4096], out[4200], n[32], pause[32], nt[16], path[4200], line[512];
	double total = -1;
	pid_t pid;
	FILE *f;
	int st;

	snprintf(cg, sizeof(cg), "%s/uffd-bench-cg", opt.exe_dir);
	snprintf(faulter, sizeof(faulter), "%s/uffd-bench-faulter", opt.exe_dir);
	snprintf(out, sizeof(out), "--callgrind-out-file=%s/cg.%%p", tmpdir);
	snprintf(n, sizeof(n), "%zu", faults);
	snprintf(pause, sizeof(pause), "%d", pause_us);
	snprintf(nt, sizeof(nt), "%d", threads);
	fflush(stdout);
	pid = fork();
	check_sys(pid, "fork");
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execlp("valgrind", "valgrind", "--tool=callgrind", out, cg, side, n, faulter, pause,
		       nt, (char *)NULL);
		_exit(127);
	}
	check_sys(waitpid(pid, &st, 0), "waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("callgrind run '%s %s' failed (status %#x); run it by hand to see why:\n  "
		    "valgrind --tool=callgrind %s %s %s %s %s %s",
		    side, n, st, cg, side, n, faulter, pause, nt);
	snprintf(path, sizeof(path), "%s/cg.%d", tmpdir, (int)pid);
	f = fopen(path, "r");
	if (!f)
		die("no callgrind output %s", path);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "totals:", 7) == 0 || strncmp(line, "summary:", 8) == 0)
			total = strtod(line + (line[0] == 't' ? 7 : 8), NULL);
	}
	fclose(f);
	unlink(path);
	if (total < 0)
		die("no totals in %s", path);
	return total;
}

static double per_fault(const char *side, size_t n, int pause_us, int threads)
{
	double one = cg_run(side, n, pause_us, threads),
	       two = cg_run(side, 2 * n, pause_us, threads);

	return (two - one) / (double)n;
}

/* The faulter's pause between pages in the idle-fd row: far longer than a fault takes to serve
 * under valgrind, so that the handler always finds its fd empty and must sleep. */
#define IDLE_PAUSE_US 300

/* One row: libuffd against @raw ("raw" or "rawpoll") with the faulter's @pause_us, @threads. */
static void cg_row(const char *variant, const char *raw, size_t n, int pause_us, int threads,
		   double target)
{
	struct row row = { .figure = "callgrind",
			   .cpu = "any",
			   .unit = "per fault",
			   .max_ratio = target,
			   .plain = true };

	snprintf(row.variant, sizeof(row.variant), "%s", variant);
	for (int i = 0; i < opt.pairs; i++) {
		row.s[row.n].a = per_fault("lib", n, pause_us, threads);
		row.s[row.n].b = per_fault(raw, n, pause_us, threads);
		if (opt.verbose)
			fprintf(stderr, "  callgrind %s: lib %.1f %s %.1f\n", variant,
				row.s[row.n].a, raw, row.s[row.n].b);
		row.n++;
	}
	snprintf(
		row.note, sizeof(row.note),
		"user-space instructions per fault = (Ir(2N) - Ir(N)) / N, N = %zu, monitor process",
		n);
	row_print(&row);
}

void fig_callgrind(void)
{
	if (!have_valgrind()) {
		printf("%-10s skipped: valgrind is not installed\n", "callgrind");
		return;
	}
	if (!mkdtemp(tmpdir))
		die("mkdtemp: %s", strerror(errno));
	cg_row("instr./fault, COPY, 1 thread, fd idle", "raw", opt.cg_faults / 4, IDLE_PAUSE_US, 1,
	       1.5);
	cg_row("... vs raw poll()+read() loop", "rawpoll", opt.cg_faults / 4, IDLE_PAUSE_US, 1, 0);
	cg_row("instr./fault, COPY, 4 threads, busy fd", "raw", opt.cg_faults, 0, 4, 1.5);
	/* Remove the pre-exec halves of the faulter's fork, which callgrind also wrote. */
	{
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "rm -f %s/cg.* && rmdir %s", tmpdir, tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "uffd-bench: could not remove %s\n", tmpdir);
	}
}
