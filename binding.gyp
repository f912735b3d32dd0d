{
  "targets": [
    {
      "target_name": "lockmem",
      "sources": [
        "native/addon.cc",
        "native/addon_convert.cc",
        "native/addon_errors.cc",
        "native/addon_session.cc",
        "native/inject.cc",
        "native/session.cc",
        "native/session_errors.cc",
        "native/session_regs.cc",
        "native/session_hold.cc",
        "native/session_stops.cc",
        "native/session_calls.cc",
        "native/session_restore.cc",
        "native/rlimit.cc",
        "native/journal.cc",
        "native/seccomp.cc",
        "native/fault.cc",
        "native/procfs.cc",
        "native/stopsig.cc",
        "native/waiters.cc",
        "native/group_stop.cc",
        "native/undo_stop.cc",
        "native/guardian_stub.cc",
        "native/arch/common.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native/arch"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fexceptions"],
      "conditions": [
        ["target_arch=='x64'", { "sources": ["native/arch/x86_64.cc"] }],
        ["target_arch=='arm64'", { "sources": ["native/arch/aarch64.cc"] }]
      ]
    }
  ]
}
