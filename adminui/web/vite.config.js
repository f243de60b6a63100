import { defineConfig } from "vite";
import base from "../../web/shared/vite.base.js";

export default defineConfig(base);
