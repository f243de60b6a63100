// Vite settings shared by the admin UI and the control-plane UI. Plain
// object (no import of vite): this directory has no node_modules of its own.
// The build goes to dist/, which Go embeds. dist/.keep stays (committed so
// go:embed compiles without a build); the npm build script removes old output.
export default {
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: false,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
};
