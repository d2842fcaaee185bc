// lattice_reference_dump: prints the independent reference's canonical state (DESIGN.md §3) of the
// envelope lines in the given files ("-" or none: stdin). Integration tests compare the
// aggregator's `lattice state dump` with it; it shares no code with crdt/ or core/.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "reference.h"

int main(int argc, char** argv) {
  std::vector<std::string> lines;
  auto read = [&](std::istream& in) {
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) {
        lines.push_back(std::move(line));
      }
    }
  };
  if (argc < 2) {
    read(std::cin);
  }
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "-") {
      read(std::cin);
      continue;
    }
    std::ifstream in(argv[i]);
    if (!in) {
      std::cerr << "lattice_reference_dump: cannot read " << argv[i] << "\n";
      return 1;
    }
    read(in);
  }
  try {
    std::cout << lattice::reference::ReferenceDump(lines);
  } catch (const std::exception& e) {
    std::cerr << "lattice_reference_dump: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
