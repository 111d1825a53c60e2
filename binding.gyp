{
  "variables": {
    # CUSE loop-control needs libfuse3; without it (or with UBLOOP_WITHOUT_FUSE=1 in the
    # environment) the addon is built without it and says so (cuseAvailable: false).
    "with_fuse%": "<!(sh -c '[ \"$UBLOOP_WITHOUT_FUSE\" != 1 ] && pkg-config --exists fuse3 && echo 1 || echo 0')"
  },
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS",
                "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "cflags_cc!": ["-std=gnu++17"],
    "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-fvisibility=hidden"]
  },
  "targets": [
    {
      "target_name": "ubloop",
      "sources": [
        "native/addon.cc",
        "native/device.cc",
        "native/errors.cc",
        "native/job.cc",
        "native/queue.cc",
        "native/spin_clock.cc",
        "native/target_loop.cc",
        "native/target_null.cc",
        "native/ublk_control.cc",
        "native/unix_socket.cc"
      ],
      "libraries": ["<!@(pkg-config --libs liburing)"],
      "conditions": [
        ["with_fuse==1", {
          "sources": ["native/cuse_loop_control.cc"],
          "cflags": ["<!@(pkg-config --cflags fuse3)"],
          "libraries": ["<!@(pkg-config --libs fuse3)"]
        }, {
          "sources": ["native/cuse_unavailable.cc"]
        }]
      ]
    },
    {
      # Helpers only the tests use (build/Release/ubloop_test.node, test/helpers/test-addon.ts).
      "target_name": "ubloop_test",
      "sources": ["test/native/test_addon.cc", "native/errors.cc"]
    }
  ]
}
