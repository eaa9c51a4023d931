// Kept in step with package.json by the bundle script's check (a bundle has no package.json beside it).
export const VERSION = '0.1.0';
