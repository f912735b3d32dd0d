#include "seccomp.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/ptrace.h>

#include <cstring>

#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif

namespace lockmem {

namespace {
constexpr int kMaxFilters = 512;  // the kernel's own limit on the filter chain is far lower in practice
}

bool readSeccompFilters(pid_t tid, SeccompFilters* out) {
  for (long index = 0; index < kMaxFilters; index++) {
    long count = ptrace(static_cast<enum __ptrace_request>(PTRACE_SECCOMP_GET_FILTER), tid,
                        reinterpret_cast<void*>(index), nullptr);
    if (count < 0) {
      if (errno == ENOENT) return true;  // past the oldest filter
      return false;
    }
    std::vector<sock_filter> prog(static_cast<size_t>(count));
    long got = ptrace(static_cast<enum __ptrace_request>(PTRACE_SECCOMP_GET_FILTER), tid,
                      reinterpret_cast<void*>(index), prog.data());
    if (got != count) return false;
    out->filters.push_back(std::move(prog));
  }
  errno = E2BIG;
  return false;
}

namespace {

// The classic BPF machine while one filter runs.
struct Bpf {
  uint32_t a = 0;
  uint32_t x = 0;
  uint32_t mem[BPF_MEMWORDS] = {0};
};

// BPF_LD: false for a load seccomp does not accept.
bool loadA(Bpf& m, uint16_t code, uint32_t k, const seccomp_data& data) {
  if (code == (BPF_LD | BPF_W | BPF_ABS)) {
    if (k > sizeof(data) - 4 || (k & 3) != 0) return false;
    std::memcpy(&m.a, reinterpret_cast<const uint8_t*>(&data) + k, 4);
  } else if (code == (BPF_LD | BPF_W | BPF_LEN)) {
    m.a = sizeof(data);
  } else if (code == (BPF_LD | BPF_IMM)) {
    m.a = k;
  } else if (code == (BPF_LD | BPF_MEM)) {
    if (k >= BPF_MEMWORDS) return false;
    m.a = m.mem[k];
  } else {
    return false;
  }
  return true;
}

// BPF_LDX: false for a load seccomp does not accept.
bool loadX(Bpf& m, uint16_t code, uint32_t k) {
  if (code == (BPF_LDX | BPF_W | BPF_LEN)) {
    m.x = sizeof(seccomp_data);
  } else if (code == (BPF_LDX | BPF_IMM)) {
    m.x = k;
  } else if (code == (BPF_LDX | BPF_MEM)) {
    if (k >= BPF_MEMWORDS) return false;
    m.x = m.mem[k];
  } else {
    return false;
  }
  return true;
}

// BPF_ALU: false for a division by zero or an unknown operation.
bool alu(Bpf& m, uint16_t code, uint32_t k) {
  uint32_t src = BPF_SRC(code) == BPF_X ? m.x : k;
  uint32_t& a = m.a;
  switch (BPF_OP(code)) {
    case BPF_ADD: a += src; break;
    case BPF_SUB: a -= src; break;
    case BPF_MUL: a *= src; break;
    case BPF_DIV: if (src == 0) return false; a /= src; break;
    case BPF_MOD: if (src == 0) return false; a %= src; break;
    case BPF_AND: a &= src; break;
    case BPF_OR: a |= src; break;
    case BPF_XOR: a ^= src; break;
    case BPF_LSH: a = src >= 32 ? 0 : a << src; break;
    case BPF_RSH: a = src >= 32 ? 0 : a >> src; break;
    case BPF_NEG: a = 0u - a; break;
    default: return false;
  }
  return true;
}

// BPF_JMP: moves `pc` (the loop adds the 1); false for an unknown comparison.
bool jump(const Bpf& m, const sock_filter& ins, size_t* pc) {
  if (BPF_OP(ins.code) == BPF_JA) {
    *pc += ins.k;
    return true;
  }
  uint32_t src = BPF_SRC(ins.code) == BPF_X ? m.x : ins.k;
  bool taken;
  switch (BPF_OP(ins.code)) {
    case BPF_JEQ: taken = m.a == src; break;
    case BPF_JGT: taken = m.a > src; break;
    case BPF_JGE: taken = m.a >= src; break;
    case BPF_JSET: taken = (m.a & src) != 0; break;
    default: return false;
  }
  *pc += taken ? ins.jt : ins.jf;
  return true;
}

// Classic BPF as seccomp accepts it (kernel/seccomp.c seccomp_check_filter): loads from
// struct seccomp_data, ALU, jumps, returns. Anything else makes the filter "kill", which is
// the conservative answer.
uint32_t runFilter(const std::vector<sock_filter>& prog, const seccomp_data& data) {
  Bpf m;
  for (size_t pc = 0; pc < prog.size(); pc++) {
    const sock_filter& ins = prog[pc];
    uint16_t code = ins.code;
    uint32_t k = ins.k;
    bool ok = true;
    switch (BPF_CLASS(code)) {
      case BPF_LD: ok = loadA(m, code, k, data); break;
      case BPF_LDX: ok = loadX(m, code, k); break;
      case BPF_ST:
      case BPF_STX:
        ok = k < BPF_MEMWORDS;
        if (ok) m.mem[k] = BPF_CLASS(code) == BPF_ST ? m.a : m.x;
        break;
      case BPF_ALU: ok = alu(m, code, k); break;
      case BPF_JMP: ok = jump(m, ins, &pc); break;
      case BPF_RET: return BPF_RVAL(code) == BPF_A ? m.a : k;
      case BPF_MISC:
        if (BPF_MISCOP(code) == BPF_TAX) m.x = m.a;
        else m.a = m.x;
        break;
      default: ok = false;
    }
    if (!ok) return SECCOMP_RET_KILL_PROCESS;
  }
  return SECCOMP_RET_KILL_PROCESS;  // fell off the end: the kernel rejects such filters
}

int32_t actionOnly(uint32_t ret) { return static_cast<int32_t>(ret & SECCOMP_RET_ACTION_FULL); }

}  // namespace

uint32_t evaluateSeccomp(const SeccompFilters& f, uint32_t arch, int nr, uint64_t ip, const uint64_t args[6]) {
  seccomp_data data;
  std::memset(&data, 0, sizeof(data));
  data.nr = nr;
  data.arch = arch;
  data.instruction_pointer = ip;
  for (int i = 0; i < 6; i++) data.args[i] = args[i];
  uint32_t result = SECCOMP_RET_ALLOW;
  // kernel/seccomp.c seccomp_run_filters: every filter runs; the action with the highest
  // precedence (lowest signed action value) wins.
  for (const auto& prog : f.filters) {
    uint32_t ret = runFilter(prog, data);
    if (actionOnly(ret) < actionOnly(result)) result = ret;
  }
  return result;
}

bool seccompAllows(uint32_t action) {
  uint32_t a = action & SECCOMP_RET_ACTION_FULL;
  return a == SECCOMP_RET_ALLOW || a == SECCOMP_RET_LOG;
}

std::string seccompActionName(uint32_t action) {
  switch (action & SECCOMP_RET_ACTION_FULL) {
    case SECCOMP_RET_KILL_PROCESS: return "KILL_PROCESS";
    case SECCOMP_RET_KILL_THREAD: return "KILL_THREAD";
    case SECCOMP_RET_TRAP: return "TRAP (SIGSYS)";
    case SECCOMP_RET_ERRNO: return "ERRNO(" + std::to_string(action & SECCOMP_RET_DATA) + ")";
    case SECCOMP_RET_USER_NOTIF: return "USER_NOTIF";
    case SECCOMP_RET_TRACE: return "TRACE";
    case SECCOMP_RET_LOG: return "LOG";
    case SECCOMP_RET_ALLOW: return "ALLOW";
    default: return "unknown action";
  }
}

}  // namespace lockmem
