import { defineConfig } from "vite";

// The build goes to dist/, which Go embeds. dist/.keep stays (committed so
// go:embed compiles without a build); the npm build script removes old output.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: false,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
});
