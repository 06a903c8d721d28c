// SPDX-License-Identifier: MIT
// Consumer test program (C++): built against the installed libuffd; prints its version and path.
#include <uffd.h>

#include <fstream>
#include <iostream>
#include <string>

static_assert(UFFD_FEATURE_MOVE == (1 << 16), "UFFD_FEATURE_MOVE");
static_assert(sizeof(struct uffdio_move) == 40, "struct uffdio_move");
static_assert(UFFD_EVT_UNMAP == UFFD_EVENT_UNMAP, "event codes");

int main()
{
	const char *v = uffd_version();
	uffd_config cfg{};
	uffd_event ev{};

	cfg.optional = UFFD_FEATURE_EVENT_UNMAP;
	(void)cfg;
	(void)ev;
	if (!v || !*v || !uffd_strerror(-1)) {
		std::cerr << "uffd_version() or uffd_strerror() returned nothing\n";
		return 1;
	}
	std::cout << "libuffd " << v << "\n";

	// Which libuffd shared object the dynamic loader chose.
	std::ifstream maps("/proc/self/maps");
	std::string line, found = "static";
	while (std::getline(maps, line)) {
		auto slash = line.find('/');
		if (slash != std::string::npos &&
		    line.find("/libuffd.so", slash) != std::string::npos) {
			found = line.substr(slash);
			break;
		}
	}
	std::cout << "loaded " << found << "\n";
	return 0;
}
