{
  "targets": [
    {
      "target_name": "ubloop",
      "sources": [
        "native/addon.cc",
        "native/cuse_loop_control.cc",
        "native/device.cc",
        "native/errors.cc",
        "native/queue.cc",
        "native/spin_clock.cc",
        "native/target_loop.cc",
        "native/target_null.cc",
        "native/ublk_control.cc",
        "native/unix_socket.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "cflags": ["<!@(pkg-config --cflags fuse3)"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "libraries": ["<!@(pkg-config --libs liburing)", "<!@(pkg-config --libs fuse3)"]
    }
  ]
}
