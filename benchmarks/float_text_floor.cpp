// The fastest float32-to-text the C++ standard library has, on the floats of a file (raw
// little-endian float32), on one thread and split over two: a floor under any JSON writer of
// gradserve's `json` answers (issue 14's MLP JSON goal). libstdc++ (GCC 11 on) implements
// std::to_chars for floats with Ryu: shortest round-trip digits, as orjson writes them.
// Built and run by benchmarks/json_writer_floor.py; by hand:
//   g++ -O2 -std=c++17 -pthread benchmarks/float_text_floor.cpp -o /tmp/float_text_floor
//   /tmp/float_text_floor FILE [repeats]
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

static char* write_all(const float* first, const float* last, char* out) {
  for (; first != last; ++first) {
    out = std::to_chars(out, out + 24, *first).ptr;
    *out++ = ',';
  }
  return out;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [repeats]\n", argv[0]);
    return 2;
  }
  std::FILE* f = std::fopen(argv[1], "rb");
  if (!f) {
    std::perror(argv[1]);
    return 2;
  }
  std::vector<float> values;
  float chunk[4096];
  size_t got;
  while ((got = std::fread(chunk, sizeof(float), 4096, f)) > 0) values.insert(values.end(), chunk, chunk + got);
  std::fclose(f);
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 15;
  const size_t n = values.size(), half = n / 2;
  std::vector<char> out(n * 24);  // written once before timing: no page faults in the timed runs
  write_all(values.data(), values.data() + n, out.data());
  std::vector<double> one, two;
  size_t bytes = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    bytes = write_all(values.data(), values.data() + n, out.data()) - out.data();
    auto t1 = std::chrono::steady_clock::now();
    std::thread other([&] { write_all(values.data(), values.data() + half, out.data()); });
    write_all(values.data() + half, values.data() + n, out.data() + half * 24);
    other.join();
    auto t2 = std::chrono::steady_clock::now();
    one.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    two.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  std::sort(one.begin(), one.end());
  std::sort(two.begin(), two.end());
  std::printf("{\"floats\": %zu, \"text_bytes\": %zu, \"one_thread_ms\": %.3f, \"two_threads_ms\": %.3f}\n", n, bytes,
              one[one.size() / 2], two[two.size() / 2]);
  return 0;
}
