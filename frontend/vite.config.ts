// Builds the review screen to dist/review.js (a fixed name: Django's template loads it with {% static %}).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/static/",
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: { review: "src/review.ts" },
      output: {
        entryFileNames: "[name].js",
        chunkFileNames: "chunks/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
        inlineDynamicImports: true,
      },
    },
  },
});
